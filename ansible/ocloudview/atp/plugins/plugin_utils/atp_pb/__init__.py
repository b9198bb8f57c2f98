"""gRPC stubs generated from proto/ by ansible/gen_stubs.py; do not edit."""
