{{/* Chart name. */}}
{{- define "framecast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-framecast unless overridden. */}}
{{- define "framecast.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "framecast.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "framecast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels; pass (dict "ctx" $ "component" "router"). */}}
{{- define "framecast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "framecast.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "framecast.router.name" -}}{{ include "framecast.fullname" . }}-router{{- end -}}
{{- define "framecast.replica.name" -}}{{ include "framecast.fullname" . }}-replica{{- end -}}
{{- define "framecast.replica.headless" -}}{{ include "framecast.fullname" . }}-replica-headless{{- end -}}

{{- define "framecast.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The router's config file: FastVideo's router block, replicas from the StatefulSet's stable DNS names. */}}
{{- define "framecast.router.config" -}}
{{- if ge (int .Values.replica.primaryIndex) (int .Values.replica.count) -}}
{{- fail (printf "replica.primaryIndex (%d) must be below replica.count (%d), or -1 for no primary" (int .Values.replica.primaryIndex) (int .Values.replica.count)) -}}
{{- end -}}
{{- $replicas := list -}}
{{- range $i, $_ := until (int .Values.replica.count) -}}
{{- $host := printf "%s-%d.%s.%s.svc.cluster.local" (include "framecast.replica.name" $) $i (include "framecast.replica.headless" $) $.Release.Namespace -}}
{{- $replicas = append $replicas (dict "url" (printf "http://%s:%d" $host (int $.Values.replica.port)) "name" (printf "replica-%d" $i) "primary" (eq $i (int $.Values.replica.primaryIndex)) "weight" 1) -}}
{{- end -}}
{{- $r := .Values.router -}}
{{- $config := dict "router" (dict
  "host" "0.0.0.0"
  "port" (int $r.port)
  "replicas" $replicas
  "health_check" (dict "path" $r.healthCheck.path "interval_seconds" $r.healthCheck.intervalSeconds "timeout_seconds" $r.healthCheck.timeoutSeconds "failure_threshold" (int $r.healthCheck.failureThreshold) "recovery_threshold" (int $r.healthCheck.recoveryThreshold))
  "selection" $r.selection
  "connect_timeout_seconds" $r.connectTimeoutSeconds
  "tunnel_idle_timeout_seconds" $r.tunnelIdleTimeoutSeconds
  "shutdown_grace_seconds" (int $r.shutdownGraceSeconds)
  "threads" (int $r.threads)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* The replica's config file. */}}
{{- /* One worker per GPU: worker i on cuda:i when the pod has GPUs. */ -}}
{{- define "framecast.replica.pool" -}}
{{- $r := .Values.replica -}}
{{- if and (gt (int $r.gpus) 0) (gt (int $r.workers) (int $r.gpus)) -}}
{{- fail (printf "replica.workers (%d) exceeds replica.gpus (%d): each worker needs its own GPU" (int $r.workers) (int $r.gpus)) -}}
{{- end -}}
num_workers: {{ int $r.workers }}
warmup: true
mode: {{ $r.poolMode }}
{{- if gt (int $r.gpus) 0 }}
devices:
{{- range $i := until (int $r.workers) }}
  - cuda:{{ $i }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "framecast.replica.config" -}}
{{- $r := .Values.replica -}}
{{- $config := dict
  "server" (dict "host" "0.0.0.0" "port" (int $r.port))
  "streaming" (dict "max_sessions" (int $r.streaming.maxSessions) "session_timeout_seconds" (int $r.streaming.sessionTimeoutSeconds) "generation_segment_cap" (int $r.streaming.generationSegmentCap) "session_log_dir" "/tmp/framecast-sessions")
  "pool" (include "framecast.replica.pool" . | fromYaml)
  "generator" (dict "kind" $r.generator.kind "device" $r.generator.device "model_path" $r.model.path "width" (int $r.generator.width) "height" (int $r.generator.height) "fps" (int $r.generator.fps) "frames_per_segment" (int $r.generator.framesPerSegment) "num_inference_steps" (int $r.generator.numInferenceSteps))
  "media" (dict "video_encoder" $r.media.videoEncoder "bitrate_kbps" (int $r.media.bitrateKbps)) -}}
{{- toYaml $config -}}
{{- end -}}
