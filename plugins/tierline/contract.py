"""The extract contract (EXTRACTS.md v1) as data: files, columns, types, keys and references.

The loader generates its SQL from these definitions, so a rule added here is enforced for every
file without further code.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierline import vocabulary

# Money is stored as numeric(18, 2) from staging on: an amount must fit it.
AMOUNT_PRECISION, AMOUNT_SCALE = 18, 2
# Upper limits of times (Column.not_after):
# - "extract_date": not after the extract date (business time zone): EXTRACTS.md's rule for orders.
# - "load": an event of the source system (a creation, a change, a contact, a birth) cannot be
#   later than the extract that reports it, which was taken after its date ended and before it is
#   loaded, so not after the later of the two; plus a day of grace for clocks and time zones. A
#   late extract (a backfill's CRM pull) holds changes made up to the pull, so the extract date
#   alone is no limit.
EVENT_GRACE_DAYS = 1


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"  # text | int | numeric | amount (numeric that fits numeric(18,2)) | timestamp | date
    nullable: bool = False
    choices: tuple[str, ...] = ()  # lower-case codes; values are lower-cased before the check
    min: float | None = None
    max: float | None = None
    not_after: str | None = None  # extract_date | load (see EVENT_GRACE_DAYS)


@dataclass(frozen=True)
class Reference:
    """A foreign key checked at load time against everything loaded so far."""

    column: str
    entity: str
    key: str
    hard: bool = True  # a hard reference quarantines the row; a soft one is a gate warning


@dataclass(frozen=True)
class Entity:
    name: str  # file stem and raw table name
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    references: tuple[Reference, ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.nullable)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name, type_="text", **kw) -> Column:
    return Column(name, type_, **kw)


def _n(name, type_="text", **kw) -> Column:
    return Column(name, type_, nullable=True, **kw)


def _event(name, nullable=False) -> Column:
    """A timestamp of something that happened in the source system (see EVENT_GRACE_DAYS)."""
    return Column(name, "timestamp", nullable=nullable, not_after="load")


def _amount(name, nullable=False) -> Column:
    """Money: fits numeric(18,2) and is not negative (refunds and discounts have their own columns)."""
    return Column(name, "amount", nullable=nullable, min=0)


# Code lists are seeds (dbt_project/seeds), shared with dbt's tests.
ORDER_STATUSES = vocabulary.order_statuses()
CUSTOMER_TYPES = vocabulary.customer_types()

# Load order matters: an entity is loaded after every entity it references.
ENTITIES: tuple[Entity, ...] = (
    Entity(
        "crm_account_managers",
        (_c("manager_id"), _c("manager_name"), _n("branch_code"), _n("email"), _event("updated_at")),
        key=("manager_id",),
    ),
    Entity(
        "crm_customers",
        (
            _c("customer_id"), _c("customer_name"),
            _c("customer_type", choices=CUSTOMER_TYPES),
            _n("phone"), _n("email"), _n("gender"), _n("birth_date", "date", not_after="load"), _n("province"),
            _n("city"),
            _n("branch_code"), _n("industry"), _n("employee_count", "int", min=0), _n("account_manager_id"),
            _n("acquisition_channel"), _n("referred_by"),
            _event("created_at"), _event("updated_at"),
            # The CRM's own id of the customer's record, when the customer came from that CRM: what
            # reverse ETL's update mode matches on (docs/crm.md).
            _n("crm_record_id"),
        ),
        key=("customer_id",),
        references=(
            Reference("account_manager_id", "crm_account_managers", "manager_id", hard=False),
            Reference("referred_by", "crm_customers", "customer_id", hard=False),
        ),
    ),
    Entity(
        "sales_products",
        (_c("product_id"), _c("product_name"), _n("category"), _amount("list_price", nullable=True),
         _amount("unit_cost", nullable=True), _event("updated_at")),
        key=("product_id",),
    ),
    Entity(
        "crm_interactions",
        (_c("interaction_id"), _c("customer_id"), _c("channel"), _n("interaction_type"), _event("occurred_at")),
        key=("interaction_id",),
        references=(Reference("customer_id", "crm_customers", "customer_id"),),
    ),
    Entity(
        "crm_tickets",
        (_c("ticket_id"), _c("customer_id"), _n("category"), _n("severity"), _event("opened_at"),
         _event("resolved_at", nullable=True), _n("csat", "int", min=1, max=5), _event("updated_at")),
        key=("ticket_id",),
        references=(Reference("customer_id", "crm_customers", "customer_id"),),
    ),
    Entity(
        "crm_surveys",
        (_c("survey_id"), _c("customer_id"), _event("answered_at"), _n("nps", "int", min=0, max=10),
         _n("csat", "int", min=1, max=5)),
        key=("survey_id",),
        references=(Reference("customer_id", "crm_customers", "customer_id"),),
    ),
    Entity(
        "crm_tier_overrides",
        (_c("customer_id"), _c("tier"), _c("reason"), _c("valid_from", "date"), _n("valid_to", "date"),
         _c("set_by"), _event("updated_at")),
        key=("customer_id",),
        references=(Reference("customer_id", "crm_customers", "customer_id"),),
    ),
    Entity(
        "sales_orders",
        (
            _c("order_id"), _c("customer_id"), _c("order_ts", "timestamp", not_after="extract_date"), _n("channel"),
            _n("branch_code"), _c("status", choices=ORDER_STATUSES), _n("currency"),
            _amount("gross_amount"), _amount("discount_amount", nullable=True), _amount("net_amount"),
            _event("updated_at"),
        ),
        key=("order_id",),
        references=(Reference("customer_id", "crm_customers", "customer_id"),),
    ),
    Entity(
        "sales_order_items",
        (_c("order_id"), _c("line_no", "int", min=1), _c("product_id"), _c("quantity", "numeric", min=0),
         _amount("unit_price"), _amount("unit_cost", nullable=True)),
        key=("order_id", "line_no"),
        references=(
            Reference("order_id", "sales_orders", "order_id"),
            Reference("product_id", "sales_products", "product_id"),
        ),
    ),
    Entity(
        "sales_refunds",
        (_c("refund_id"), _c("order_id"), _event("refunded_at"), _amount("amount")),
        key=("refund_id",),
        references=(Reference("order_id", "sales_orders", "order_id"),),
    ),
)

BY_NAME = {e.name: e for e in ENTITIES}
BY_FILE = {e.file_name: e for e in ENTITIES}
