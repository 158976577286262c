{{- define "tonle.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tonle.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The serving pods (not the migration Job's). */}}
{{- define "tonle.serverSelectorLabels" -}}
{{ include "tonle.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "tonle.labels" -}}
{{ include "tonle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tonle.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "tonle.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "tonle.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The audit database URL: from the chart's Secret, or built from CloudNativePG's. */}}
{{- define "tonle.databaseEnv" -}}
{{- if .Values.cloudnativepg.appSecret }}
{{- range $var, $key := dict "PGUSER" "username" "PGPASSWORD" "password" "PGHOST" "host" "PGPORT" "port" "PGDATABASE" "dbname" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.cloudnativepg.appSecret }}
      key: {{ $key }}
{{- end }}
- name: TONLE_DATABASE_URL
  value: "postgresql+psycopg://$(PGUSER):$(PGPASSWORD)@$(PGHOST):$(PGPORT)/$(PGDATABASE)"
{{- else }}
- name: TONLE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tonle.secretName" . }}
      key: database-url
{{- end }}
{{- end -}}

{{/* Writable paths under a read-only root file system. */}}
{{- define "tonle.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: prometheus
  mountPath: /home/bentoml/prometheus_multiproc_dir
{{- end -}}

{{- define "tonle.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: prometheus
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}
