"""Security and GDPR as code: the encrypted EU bucket, its KMS key, the EMR security
configuration, least-privilege IAM roles (``provision`` / ``check``) and the right to
erasure across the lake (``erase``). Run ``python -m fruits_infra --help``."""
