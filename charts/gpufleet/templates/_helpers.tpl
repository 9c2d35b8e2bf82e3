{{/*
Names: with the release "gpufleet" every object is "gpufleet-<component>"; another release name
is prefixed ("prod-gpufleet-<component>"), so two releases can share a cluster.
*/}}
{{- define "gpufleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gpufleet.fullname" -}}
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

{{/* The name of one component's objects: (dict "root" $ "component" "operator"). */}}
{{- define "gpufleet.componentName" -}}
{{- printf "%s-%s" (include "gpufleet.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "gpufleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "agent"). */}}
{{- define "gpufleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpufleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects: (dict "root" $ "component" "agent"). */}}
{{- define "gpufleet.labels" -}}
helm.sh/chart: {{ include "gpufleet.chart" .root }}
{{ include "gpufleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: gpufleet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gpufleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The container securityContext every component shares (the agent adds `privileged`). */}}
{{- define "gpufleet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "gpufleet.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount a component runs as; its name is what the RBAC bindings and the agent's
admission policy refer to.
*/}}
{{- define "gpufleet.serviceAccount" -}}
{{- $values := index .root.Values .component -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "gpufleet.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "gpufleet.labels" . | nindent 4 }}
  {{- with $values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
The operator's rules on the namespaces whose InferenceDeployments it reconciles (every
namespace, or operator.watchNamespace): operator/src/controller.rs.
*/}}
{{- define "gpufleet.operatorWorkloadRules" -}}
# Replica Pods: created bound to the chosen node, deleted when replaced or scaled down, and
# annotated with the reason when the defragmenter moves one.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete", "patch"]
- apiGroups: ["gpufleet.io"]
  resources: ["inferencedeployments"]
  verbs: ["list", "watch"]
# Status by server-side apply.
- apiGroups: ["gpufleet.io"]
  resources: ["inferencedeployments/status"]
  verbs: ["patch"]
# Replica Pods carry an owner reference with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin allow only to who may update the
# owner's finalizers.
- apiGroups: ["gpufleet.io"]
  resources: ["inferencedeployments/finalizers"]
  verbs: ["update"]
# An Event for every placement decision (kube-runtime's Recorder creates, then patches a
# repeated one into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
