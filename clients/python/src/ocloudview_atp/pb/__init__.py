"""gRPC stubs generated from proto/ by clients/python/gen_stubs.py; do not edit."""
