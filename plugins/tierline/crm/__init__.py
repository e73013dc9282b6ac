"""Writing tiers back to the CRM: the connector interface, Zoho CRM, and a local Zoho emulator."""

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
