{{/* Labels on every object. No release or chart labels: deploy/podwarp.yaml
is this chart rendered, and is applied with kubectl too. */}}
{{- define "podwarp.labels" -}}
app.kubernetes.io/name: podwarp
{{- end }}

{{/* The agent pods: the DaemonSet selector (immutable: never change it). */}}
{{- define "podwarp.agentSelector" -}}
app.kubernetes.io/name: podwarp
app.kubernetes.io/component: agent
{{- end }}

{{/* repository@digest when a digest is given (it pins the image), else repository:tag */}}
{{- define "podwarp.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}
{{- end }}

{{- define "podwarp.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default "podwarp" }}
{{- end }}
