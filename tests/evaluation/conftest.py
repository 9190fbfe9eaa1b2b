"""The evaluation tests use the root conftest's ``tiny_byte_llama``, ``tiny_encoder`` and ``hash_encoder``."""
