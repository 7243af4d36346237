{{/* The chart's name, at most 63 characters (a DNS label). */}}
{{- define "voik.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name alone when it already contains the
chart's name ("voik", "voik-prod"), else "<release>-voik".
*/}}
{{- define "voik.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voik.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "voik.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voik.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "voik.labels" -}}
helm.sh/chart: {{ include "voik.chart" . }}
{{ include "voik.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: history
app.kubernetes.io/part-of: voik
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "voik.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voik.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "voik.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
A value as an env var string. Helm reads numbers in values files as float64,
which print as 1e+06: whole numbers are printed as integers.
*/}}
{{- define "voik.envString" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Where the NATS secret files are mounted. */}}
{{- define "voik.natsSecretsDir" -}}/etc/voik/nats{{- end }}

{{/*
The VOIK_* environment of the voik container: the settings from values, the
NATS connection and its secrets. Shared by the StatefulSet and the test pod.
*/}}
{{- define "voik.natsEnv" -}}
{{- $dir := include "voik.natsSecretsDir" . }}
{{- $auth := .Values.nats.auth }}
{{- $tls := .Values.nats.tls -}}
- name: VOIK_NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: VOIK_NATS_NAME
  value: {{ .Values.nats.name | quote }}
- name: VOIK_API_PREFIX
  value: {{ .Values.config.apiPrefix | quote }}
{{- if eq $auth.type "credentials" }}
- name: VOIK_NATS_CREDS
  value: {{ printf "%s/credentials/%s" $dir $auth.keys.credentials | quote }}
{{- else if eq $auth.type "nkey" }}
- name: VOIK_NATS_NKEY
  value: {{ printf "%s/nkey/%s" $dir $auth.keys.nkey | quote }}
{{- else if eq $auth.type "token" }}
- name: VOIK_NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $auth.secretName | quote }}
      key: {{ $auth.keys.token | quote }}
{{- else if eq $auth.type "userPassword" }}
- name: VOIK_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $auth.secretName | quote }}
      key: {{ $auth.keys.username | quote }}
- name: VOIK_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.secretName | quote }}
      key: {{ $auth.keys.password | quote }}
{{- end }}
{{- if $tls.caSecretName }}
- name: VOIK_NATS_TLS_CA
  value: {{ printf "%s/tls-ca/%s" $dir $tls.caKey | quote }}
{{- end }}
{{- if $tls.clientSecretName }}
- name: VOIK_NATS_TLS_CERT
  value: {{ printf "%s/tls-client/%s" $dir $tls.certKey | quote }}
- name: VOIK_NATS_TLS_KEY
  value: {{ printf "%s/tls-client/%s" $dir $tls.keyKey | quote }}
{{- end }}
{{- end }}

{{/* The settings of the running voik (not needed by the CLI). */}}
{{- define "voik.serverEnv" -}}
{{- $c := .Values.config -}}
- name: VOIK_DATA_DIR
  value: /data
- name: VOIK_HTTP_ADDR
  value: {{ printf ":%s" (include "voik.envString" .Values.service.port) | quote }}
- name: VOIK_SUBJECTS
  value: {{ required "config.subjects is required: name the subjects to capture, e.g. --set config.subjects='orders.>,payments.>' (on a shared NATS, > would take every request)" $c.subjects | quote }}
- name: VOIK_SYNC
  value: {{ $c.sync | quote }}
- name: VOIK_SYNC_INTERVAL
  value: {{ $c.syncInterval | quote }}
- name: VOIK_SEGMENT_SIZE
  value: {{ include "voik.envString" $c.segmentSize | quote }}
- name: VOIK_RETENTION_MAX_AGE
  value: {{ $c.retention.maxAge | quote }}
- name: VOIK_RETENTION_MAX_BYTES
  value: {{ include "voik.envString" $c.retention.maxBytes | quote }}
- name: VOIK_RETENTION_MAX_MESSAGES
  value: {{ include "voik.envString" $c.retention.maxMessages | quote }}
- name: VOIK_DEDUPE_WINDOW
  value: {{ $c.dedupeWindow | quote }}
- name: VOIK_MAX_OPEN_LOGS
  value: {{ include "voik.envString" $c.maxOpenLogs | quote }}
- name: VOIK_PENDING_MSGS
  value: {{ include "voik.envString" $c.pendingMsgs | quote }}
- name: VOIK_PENDING_BYTES
  value: {{ include "voik.envString" $c.pendingBytes | quote }}
- name: VOIK_REPLY_BUDGET
  value: {{ include "voik.envString" $c.replyBudget | quote }}
- name: VOIK_MAX_LONG_POLLS
  value: {{ include "voik.envString" $c.maxLongPolls | quote }}
- name: VOIK_NATS_PING_INTERVAL
  value: {{ .Values.nats.pingInterval | quote }}
- name: VOIK_NATS_MAX_PINGS_OUT
  value: {{ include "voik.envString" .Values.nats.maxPingsOut | quote }}
- name: VOIK_LOG_LEVEL
  value: {{ $c.logLevel | quote }}
- name: VOIK_LOG_FORMAT
  value: {{ $c.logFormat | quote }}
- name: VOIK_PPROF
  value: {{ $c.pprof | quote }}
{{- include "voik.groupEnv" . }}
{{- end }}

{{/*
The replication group's settings: the group's name, this member's name (the
pod's, stable across restarts), the member count. Empty when standalone.
*/}}
{{- define "voik.groupEnv" -}}
{{- if .Values.group.enabled }}
- name: VOIK_GROUP
  value: {{ include "voik.groupName" . | quote }}
- name: VOIK_INSTANCE
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: VOIK_REPLICAS
  value: {{ include "voik.envString" .Values.replicaCount | quote }}
- name: VOIK_LEASE
  value: {{ .Values.group.lease | quote }}
- name: VOIK_JOURNAL_KEEP
  value: {{ include "voik.envString" .Values.group.journalKeep | quote }}
{{- end }}
{{- end }}

{{/*
VOIK_GROUP: group.name, else <namespace>-<full name> with dots as _ (voik
takes letters, digits, - and _; _ never occurs in either part, so two
releases never map to one name).
*/}}
{{- define "voik.groupName" -}}
{{- if .Values.group.name }}
{{- .Values.group.name }}
{{- else }}
{{- printf "%s-%s" .Release.Namespace (include "voik.fullname" .) | replace "." "_" }}
{{- end }}
{{- end }}

{{/* A majority of the group: replicaCount / 2 + 1. */}}
{{- define "voik.majority" -}}
{{- add (div (int .Values.replicaCount) 2) 1 }}
{{- end }}

{{/*
The pod's affinity: affinity from values, with spread.antiAffinity's
podAntiAffinity on kubernetes.io/hostname unless it has one of its own.
*/}}
{{- define "voik.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "voik.selectorLabels" . | fromYaml)) }}
{{- if not (hasKey $affinity "podAntiAffinity") }}
{{- if eq .Values.spread.antiAffinity "soft" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- else if eq .Values.spread.antiAffinity "hard" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- end }}
{{- end }}
{{- if $affinity }}
{{- toYaml $affinity }}
{{- end }}
{{- end }}

{{/*
The pod's topology spread constraints: topologySpreadConstraints from
values, else spread.zones' one over topology.kubernetes.io/zone.
*/}}
{{- define "voik.topologySpread" -}}
{{- if .Values.topologySpreadConstraints }}
{{- toYaml .Values.topologySpreadConstraints }}
{{- else if ne .Values.spread.zones "none" }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: {{ ternary "DoNotSchedule" "ScheduleAnyway" (eq .Values.spread.zones "hard") }}
  labelSelector:
    matchLabels:
      {{- include "voik.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Volumes holding the NATS secret files: credentials or NKey seed, CA, client certificate. */}}
{{- define "voik.natsSecretVolumes" -}}
{{- $auth := .Values.nats.auth }}
{{- $tls := .Values.nats.tls }}
{{- if eq $auth.type "credentials" }}
- name: nats-credentials
  secret:
    secretName: {{ $auth.secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ $auth.keys.credentials | quote }}
        path: {{ $auth.keys.credentials | quote }}
{{- else if eq $auth.type "nkey" }}
- name: nats-nkey
  secret:
    secretName: {{ $auth.secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ $auth.keys.nkey | quote }}
        path: {{ $auth.keys.nkey | quote }}
{{- end }}
{{- if $tls.caSecretName }}
- name: nats-tls-ca
  secret:
    secretName: {{ $tls.caSecretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ $tls.caKey | quote }}
        path: {{ $tls.caKey | quote }}
{{- end }}
{{- if $tls.clientSecretName }}
- name: nats-tls-client
  secret:
    secretName: {{ $tls.clientSecretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ $tls.certKey | quote }}
        path: {{ $tls.certKey | quote }}
      - key: {{ $tls.keyKey | quote }}
        path: {{ $tls.keyKey | quote }}
{{- end }}
{{- end }}

{{- define "voik.natsSecretMounts" -}}
{{- $dir := include "voik.natsSecretsDir" . }}
{{- $auth := .Values.nats.auth }}
{{- $tls := .Values.nats.tls }}
{{- if eq $auth.type "credentials" }}
- name: nats-credentials
  mountPath: {{ printf "%s/credentials" $dir }}
  readOnly: true
{{- else if eq $auth.type "nkey" }}
- name: nats-nkey
  mountPath: {{ printf "%s/nkey" $dir }}
  readOnly: true
{{- end }}
{{- if $tls.caSecretName }}
- name: nats-tls-ca
  mountPath: {{ printf "%s/tls-ca" $dir }}
  readOnly: true
{{- end }}
{{- if $tls.clientSecretName }}
- name: nats-tls-client
  mountPath: {{ printf "%s/tls-client" $dir }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "voik.httpProbe" -}}
httpGet:
  path: {{ .probe.path }}
  port: http
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
"true" when the NATS subject .subject is matched by one of the
comma-separated filters .filters (* one token, > one or more at the end),
as voik's capture matches it; empty otherwise. helm test publishes to
tests.subject and waits for voik's ack, which only a captured subject gets.
*/}}
{{- define "voik.captures" -}}
{{- $s := splitList "." .subject -}}
{{- $match := false -}}
{{- range $filter := splitList "," .filters -}}
{{- $f := splitList "." (trim $filter) -}}
{{- $ok := true -}}
{{- $rest := false -}}
{{- range $i, $t := $f -}}
{{- if and $ok (not $rest) -}}
{{- if eq $t ">" -}}
{{- if lt $i (len $s) }}{{ $rest = true }}{{ else }}{{ $ok = false }}{{ end -}}
{{- else if ge $i (len $s) -}}
{{- $ok = false -}}
{{- else if and (ne $t "*") (ne $t (index $s $i)) -}}
{{- $ok = false -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $ok (or $rest (eq (len $f) (len $s))) }}{{ $match = true }}{{ end -}}
{{- end -}}
{{- if $match }}true{{ end -}}
{{- end -}}

{{/* "true" when helm test can run: enabled, and its subject captured. */}}
{{- define "voik.testRuns" -}}
{{- if and .Values.tests.enabled (include "voik.captures" (dict "subject" .Values.tests.subject "filters" (.Values.config.subjects | default ""))) }}true{{ end -}}
{{- end -}}

{{/*
Fails when the PodDisruptionBudget would let a voluntary disruption (a node
drain) take down a majority of the group: nothing would commit, and no
member could be elected, until the pods came back. A group of one is left
alone: its one pod must be allowed to move.
*/}}
{{- define "voik.checkGroup" -}}
{{- $n := int .Values.replicaCount }}
{{- $majority := int (include "voik.majority" .) }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and .Values.group.enabled $pdb.enabled (gt $n 1) }}
{{- $down := 0 }}
{{- if ne (toString $pdb.minAvailable) "" }}
{{- $down = sub $n (include "voik.scaledCount" (dict "value" $pdb.minAvailable "of" $n)) }}
{{- else }}
{{- $down = int (include "voik.scaledCount" (dict "value" $pdb.maxUnavailable "of" $n)) }}
{{- end }}
{{- if gt (int $down) (sub $n $majority) }}
{{- fail (printf "podDisruptionBudget lets a drain take %d of the group's %d members down at once; a majority (%d) must stay up: use maxUnavailable %d or less (or minAvailable %d or more)" (int $down) $n $majority (sub $n $majority) $majority) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A PodDisruptionBudget count as Kubernetes computes it: a number as it is, a
percentage of .of rounded up.
*/}}
{{- define "voik.scaledCount" -}}
{{- $v := toString .value }}
{{- if hasSuffix "%" $v }}
{{- $p := int (trimSuffix "%" $v) }}
{{- div (add (mul $p .of) 99) 100 }}
{{- else }}
{{- int .value }}
{{- end }}
{{- end }}

{{/* An alert's labels: its severity, and prometheusRule.alertLabels. */}}
{{- define "voik.alertLabels" -}}
severity: {{ .severity }}
{{- with omit .extra "severity" }}
{{ toYaml . }}
{{- end }}
{{- end }}
