"""Writing tiers back to the CRM: the connector interface and Zoho CRM (emulators: devtools/tierline_dev)."""

from tierline.crm.connector import (
    CrmAuthError,
    CrmBatchRejected,
    CrmBatchTooLarge,
    CrmBudgetExceeded,
    CrmConnector,
    CrmError,
    CrmProtocolError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    RecordResult,
    ZohoCrmConnector,
    parse_crm_time,
)

__all__ = [
    "CrmAuthError",
    "CrmBatchRejected",
    "CrmBatchTooLarge",
    "CrmBudgetExceeded",
    "CrmConnector",
    "CrmError",
    "CrmProtocolError",
    "CrmRateLimited",
    "CrmRequestError",
    "CrmUnavailable",
    "RecordResult",
    "ZohoCrmConnector",
    "parse_crm_time",
]
