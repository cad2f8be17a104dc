"""The workflow's and its search attributes' names, as plain strings.

``executor.engine.contract`` builds the SDK's typed keys from them; the HTTP path
(``executor.service.http_runs``) reads and filters by them without importing the Temporal SDK.
"""

from __future__ import annotations

__all__ = ["ATTR_PLAN_HASH", "ATTR_PLAN_NAME", "ATTR_SESSION", "ATTR_STATUS", "ATTR_TENANT", "WORKFLOW_NAME"]

WORKFLOW_NAME = "DuraplanRun"
ATTR_TENANT = "DuraplanTenant"
ATTR_SESSION = "DuraplanSession"
ATTR_STATUS = "DuraplanStatus"
ATTR_PLAN_HASH = "DuraplanPlanHash"
ATTR_PLAN_NAME = "DuraplanPlanName"
