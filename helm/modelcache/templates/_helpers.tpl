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
