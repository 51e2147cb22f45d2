# IAM role for the Ray pods' service account (IRSA): read/write on the output bucket and nothing else.
# Public Sentinel-2 COGs need no credentials. Put the role ARN (output `ray_role_arn`) into the
# annotation of ServiceAccount difffusr-ray in k8s/serviceaccounts.yaml and delete Secret difffusr-s3.
data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

locals {
  oidc_host = replace(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

data "aws_iam_policy_document" "ray_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [data.aws_iam_openid_connect_provider.this.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray" {
  name               = "${var.cluster_name}-difffusr-ray"
  assume_role_policy = data.aws_iam_policy_document.ray_assume.json
}

data "aws_iam_policy_document" "bucket_rw" {
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.output.arn]
  }
  statement {
    sid = "ReadWriteObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.output.arn}/*"]
  }
}

resource "aws_iam_role_policy" "bucket_rw" {
  name   = "difffusr-output-rw"
  role   = aws_iam_role.ray.id
  policy = data.aws_iam_policy_document.bucket_rw.json
}
