"""PyTorch side of CSAE-JAX steering: SAE modules from exports, ae.pt import, hooks, judges."""
