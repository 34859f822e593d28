// luahealth runs an Argo CD resource health check (health.lua) the way Argo CD does:
// gopher-lua with only the package, base and table libraries open, the object as the
// global `obj` (maps as tables, lists as 1-based tables, numbers as Lua numbers), and
// the returned table printed as {"status": "...", "message": "..."}.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

func decodeValue(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case map[string]any:
		table := L.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, decodeValue(L, item))
		}
		return table
	case []any:
		table := L.CreateTable(len(v), 0)
		for i, item := range v {
			table.RawSetInt(i+1, decodeValue(L, item))
		}
		return table
	default:
		return lua.LNil
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: luahealth health.lua OBJECT.(yaml|json)")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	data, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(data, &obj); err != nil {
		fail(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", decodeValue(L, obj))
	if err := L.DoString(string(script)); err != nil {
		fail(err)
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		fail(fmt.Errorf("health.lua returned %s, not a table", L.Get(-1).Type()))
	}
	out, _ := json.Marshal(map[string]string{
		"status":  table.RawGetString("status").String(),
		"message": table.RawGetString("message").String(),
	})
	fmt.Println(string(out))
}
