{{- define "modelcache.operatorImage" -}}
{{ .Values.operator.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- define "modelcache.agentImage" -}}
{{ .Values.agent.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- define "modelcache.labels" -}}
app.kubernetes.io/name: modelcache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "modelcache.agentSelectorLabels" -}}
app.kubernetes.io/name: modelcache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}
{{- define "modelcache.operatorSelectorLabels" -}}
app.kubernetes.io/name: modelcache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{/* The PromQL matchers of the agents' series: the PodMonitor's job unless set. */}}
{{- define "modelcache.agentMatchers" -}}
{{- .Values.monitoring.prometheusRule.agentSelector | default (printf "job=%q" (printf "%s/%s-agent" .Release.Namespace .Release.Name)) -}}
{{- end -}}
{{/* The PromQL matchers of the operator's series: its PodMonitor's job unless set. */}}
{{- define "modelcache.operatorMatchers" -}}
{{- .Values.monitoring.prometheusRule.operatorSelector | default (printf "job=%q" (printf "%s/%s-operator" .Release.Namespace .Release.Name)) -}}
{{- end -}}
{{/* The chart's labels, the component's, then the user's own on top (dict: ctx, component, extra). */}}
{{- define "modelcache.mergedLabels" -}}
{{- $chart := include "modelcache.labels" .ctx | fromYaml -}}
{{- $_ := set $chart "app.kubernetes.io/component" .component -}}
{{- toYaml (merge (deepCopy (.extra | default dict)) $chart) -}}
{{- end -}}

{{/* The Secret holding the agents' peer token (docs/fanout.md). */}}
{{- define "modelcache.peerSecret" -}}
{{- .Values.agent.peers.existingSecret | default (printf "%s-peer-token" .Release.Name) -}}
{{- end -}}
