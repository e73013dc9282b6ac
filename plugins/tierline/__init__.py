"""tierline: customer value, VIP tier and lifecycle tables from CRM and sales extracts."""
