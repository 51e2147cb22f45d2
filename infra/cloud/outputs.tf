output "bucket" {
  description = "Output bucket; set DIFFFUSR_OUT_ROOT=s3://<bucket> in k8s/config/difffusr.env."
  value       = aws_s3_bucket.output.bucket
}

output "ray_role_arn" {
  description = "IAM role of the Ray pods; the eks.amazonaws.com/role-arn annotation of ServiceAccount difffusr-ray."
  value       = aws_iam_role.ray.arn
}

output "node_groups" {
  description = "Managed node groups (nodeSelector difffusr.io/pool = cpu | gpu)."
  value       = [aws_eks_node_group.cpu.node_group_name, aws_eks_node_group.gpu.node_group_name]
}
