"""Local stand-ins for the CRMs tierline syncs with, speaking real HTTP: Zoho CRM v8 (``zoho``)."""
