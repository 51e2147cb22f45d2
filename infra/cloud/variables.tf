variable "region" {
  description = "AWS region of the bucket and the node groups (Sentinel-2 COGs of Earth Search live in us-west-2)."
  type        = string
  default     = "eu-central-1"
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster that runs the KubeRay operator."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the cluster where the difffusr node groups start nodes."
  type        = list(string)
}

variable "bucket_name" {
  description = "S3 bucket for tile stores, mosaics, COGs, manifests and checkpoints (DIFFFUSR_OUT_ROOT = s3://<bucket_name>)."
  type        = string
  default     = "difffusr-output"
}

variable "namespace" {
  description = "Kubernetes namespace of k8s/ (kustomization.yaml `namespace`)."
  type        = string
  default     = "difffusr"
}

variable "service_account" {
  description = "Kubernetes service account of every Ray pod (k8s/serviceaccounts.yaml)."
  type        = string
  default     = "difffusr-ray"
}

variable "cpu_instance_types" {
  description = "CPU pool: Ray head + ingest workers (a 6 CPU / 24 GiB ingest pod, two per 16 vCPU / 64 GiB node)."
  type        = list(string)
  default     = ["m7i.4xlarge"]
}

variable "cpu_max_nodes" {
  description = "Upper bound of the CPU pool (ingest maxReplicas 8 at two per node, plus the head)."
  type        = number
  default     = 5
}

variable "gpu_instance_types" {
  description = "GPU pool: one inference or training worker per node (8 CPU / 48 GiB / 1 GPU pod)."
  type        = list(string)
  default     = ["g6e.4xlarge"]
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU pool (k8s/raycluster.yaml gpu-inference maxReplicas)."
  type        = number
  default     = 16
}

variable "output_expiry_days" {
  description = "Delete objects under tmp/ after this many days (scratch tile stores)."
  type        = number
  default     = 14
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { project = "difffusr" }
}
