"""Writing tiers back to the CRM: the connector interface, Zoho CRM and 纷享销客 (emulators: devtools/tierline_dev)."""

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
from tierline.crm.fxiaoke import FxiaokeConnector

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
    "FxiaokeConnector",
    "RecordResult",
    "ZohoCrmConnector",
    "parse_crm_time",
]
