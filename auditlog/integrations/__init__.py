"""Integrations: where auditlog meets a framework. One module per framework, as ``sentry_sdk.integrations``.

- :mod:`~auditlog.integrations.asgi` and :mod:`~auditlog.integrations.wsgi`: HTTP middleware, sharing one
  recorder (:mod:`~auditlog.integrations._http`, its request state in ``_http_request``) and URL
  redaction (``urls``);
- :mod:`~auditlog.integrations.mcp` (the official SDK) and :mod:`~auditlog.integrations.fastmcp`, sharing
  one auditor (``_mcp_auditor``, its request in ``_mcp_request``);
- :mod:`~auditlog.integrations.otel`: span and log processors that hand exporters redacted copies;
- :mod:`~auditlog.integrations.stdlib`: routes stdlib ``logging`` through the pipeline.

May import: the public face (``auditlog.handle``, ``policy``, ``events``, ``actor``, ``correlation``,
``bodies``, ``pipeline``), ``processors`` and ``store``. Never the lake, investigations, evidence, the CLI
or the demo. Framework packages are imported only by the module that adapts them, so importing this
package costs nothing.
"""
