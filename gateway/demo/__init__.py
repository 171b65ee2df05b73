"""``sluice demo``: two trust domains, two federated gateways, workloads on both sides."""
