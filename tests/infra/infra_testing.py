"""Constants shared by the infra tests (imported by name: conftest modules are not importable reliably)."""
REGION = "eu-west-3"
BUCKET = "fruits-lake-test"
