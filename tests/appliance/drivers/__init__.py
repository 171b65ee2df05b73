"""Small programs the namespace tests run inside other network namespaces (``ip netns exec``).

Each is a module run as ``python -m tests.appliance.drivers.<name>``; each ends by itself after
``--max-seconds`` so a test that dies cannot leave one running.
"""
