{{- /* _helpers.tpl — names, labels, image and security contexts shared by the templates. Keep to
the Go-template subset tests/lib/helm-render.mjs renders (no range/with/$/parentheses). */ -}}
{{- define "ctxgate.labels" -}}
app.kubernetes.io/name: ctxgate
app.kubernetes.io/part-of: ctxgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: Helm
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "ctxgate.image" }}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ end }}

{{- define "ctxgate.gatewayImage" -}}
{{- if .Values.gatewayImage }}{{ .Values.gatewayImage }}{{ else }}{{ include "ctxgate.image" . }}{{ end }}
{{- end }}

{{- define "ctxgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "ctxgate.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
