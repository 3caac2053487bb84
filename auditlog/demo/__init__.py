"""The demo: a scripted incident against real servers, and the self-test that plants every canary.

- :mod:`~auditlog.demo.workload`: what ``auditlog demo`` runs and prints;
- :mod:`~auditlog.demo.servers`: the demo's ASGI app and MCP server, run on loopback;
- :mod:`~auditlog.demo.selftest`: ``auditlog selftest``.

Sits on top: may import anything in ``auditlog``; nothing imports it but the CLI.
"""
