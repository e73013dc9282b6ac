"""Sample CRM and sales extracts written to the extract contract (EXTRACTS.md).

``generate`` writes ``<out>/<YYYY-MM-DD>/<file>.csv``: a full snapshot of all ten files for
``start_date`` (covering ``history_days`` before it), then one folder per following day holding
only the rows created or changed that day. Customers behave according to personas (loyal whales,
newcomers, decliners, churned, reactivated, prospects, ...) recorded in ``<out>/_personas.csv``,
so tests can check that tiers and lifecycle stages land where the behaviour says they should.

With ``dirty=True`` the files look like real exports (mixed phone, e-mail, name, timestamp, amount,
null and header spellings, a GB18030 file, a BOM, a reordered header) and carry a few broken rows,
each listed in ``<out>/_expected_quarantine.csv`` by physical line (header = line 1). Broken rows
are always extra rows with keys of their own, never damaged real rows, so nothing else in the
data depends on them and the rest of every file stays valid.

Rows are assembled as numpy byte matrices (one row per line, zero bytes as padding dropped on
output) because formatting tens of millions of fields one Python call at a time would take the
better part of an hour at 1,000,000 customers. Orders, items and events are generated window by
window along the timeline and streamed to disk, so memory does not grow with the order count.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from faker import Faker
from tqdm import tqdm

from tierline import contract

DAY = 86_400
HOUR = 3_600
TZ_OFFSET = 8 * HOUR  # Asia/Shanghai has had no daylight saving time since 1991: a fixed offset is exact
BROKEN_EVERY = 20_000
MIN_HISTORY_DAYS = 460  # reactivated customers need a purchase, a gap of over a year, and a return
WINDOW_DAYS = 30
BUFFER_ROWS = 250_000
WRITE_CHUNK = 100_000  # rows formatted at once: bounds the byte matrices' memory  # broken rows are placed at random within a buffer, so small files get them anywhere
NEVER = np.int64(2**62)

KINDS = (
    "bad_number", "bad_timestamp", "missing_key", "unknown_fk", "negative_quantity", "future_order",
    "duplicate_key", "field_count",
)


# ---------------------------------------------------------------------------------------------
# Reference data


@dataclass(frozen=True)
class _Persona:
    name: str
    share: float
    age_days: tuple[float, float]  # customer age at the snapshot; the upper bound is capped by the history
    orders_per_day: float
    contacts_per_day: float
    enterprise: float
    affinity: float  # shifts the price level a customer buys at, which makes spend heavy-tailed
    managed: float  # share with an account manager (enterprises always have one)
    nps: float
    regularity: float = 2.0  # gamma shape of the per-customer rate: higher means customers are more alike


PERSONAS = (
    _Persona("loyal_whale", 0.015, (400, 1e9), 1 / 5, 1 / 12, 0.45, 1.2, 1.0, 9.0, regularity=10.0),
    _Persona("loyal", 0.12, (180, 1e9), 1 / 14, 1 / 30, 0.15, 0.5, 0.6, 8.3, regularity=5.0),
    _Persona("occasional", 0.34, (60, 1e9), 1 / 90, 1 / 120, 0.08, 0.0, 0.2, 7.0),
    _Persona("newcomer", 0.04, (0.1, 28), 1 / 12, 1 / 6, 0.08, 0.2, 0.3, 7.8),
    _Persona("declining", 0.08, (400, 1e9), 1 / 15, 1 / 45, 0.12, 0.3, 0.5, 5.5, regularity=4.0),
    _Persona("dormant", 0.08, (360, 1e9), 1 / 35, 1 / 70, 0.08, 0.0, 0.2, 6.0),
    _Persona("churned", 0.15, (420, 1e9), 1 / 50, 1 / 90, 0.08, -0.2, 0.15, 4.5),
    _Persona("reactivated", 0.03, (450, 1e9), 1 / 40, 1 / 45, 0.10, 0.1, 0.3, 7.0),
    _Persona("prospect", 0.145, (0.1, 1e9), 0.0, 1 / 30, 0.10, 0.0, 0.3, 7.0),
)
PERSONA_NAMES = tuple(p.name for p in PERSONAS)
_P = {name: i for i, name in enumerate(PERSONA_NAMES)}
# Customers outside the personas: RESERVED ids appear only in broken rows; DELETED customers buy
# but are never exported, so their ids make realistic unknown foreign keys.
RESERVED, DELETED = len(PERSONAS), len(PERSONAS) + 1

BRANCHES = (
    ("BJ01", 0.18, (("北京市", "北京市"), ("天津市", "天津市"), ("河北省", "石家庄市"), ("河北省", "廊坊市"))),
    ("SH01", 0.18, (("上海市", "上海市"), ("江苏省", "苏州市"), ("江苏省", "无锡市"), ("江苏省", "南京市"))),
    ("GZ01", 0.12, (("广东省", "广州市"), ("广东省", "佛山市"), ("广东省", "东莞市"), ("广西壮族自治区", "南宁市"))),
    ("SZ01", 0.13, (("广东省", "深圳市"), ("广东省", "惠州市"), ("广东省", "珠海市"))),
    ("CD01", 0.10, (("四川省", "成都市"), ("重庆市", "重庆市"), ("四川省", "绵阳市"))),
    ("HZ01", 0.11, (("浙江省", "杭州市"), ("浙江省", "宁波市"), ("浙江省", "绍兴市"), ("浙江省", "嘉兴市"))),
    ("WH01", 0.10, (("湖北省", "武汉市"), ("湖南省", "长沙市"), ("湖北省", "宜昌市"))),
    ("XA01", 0.08, (("陕西省", "西安市"), ("陕西省", "咸阳市"), ("甘肃省", "兰州市"))),
)
BRANCH_CODES = tuple(b[0] for b in BRANCHES)
_PLACES = tuple((b, prov, city) for b, (_, _, places) in enumerate(BRANCHES) for prov, city in places)
PROVINCES = tuple(dict.fromkeys(p for _, p, _ in _PLACES))
CITIES = tuple(dict.fromkeys(c for _, _, c in _PLACES))
_PLACE_PROVINCE = np.array([PROVINCES.index(p) for _, p, _ in _PLACES])
_PLACE_CITY = np.array([CITIES.index(c) for _, _, c in _PLACES])
_BRANCH_FIRST_PLACE = np.array([[b for b, _, _ in _PLACES].index(i) for i in range(len(BRANCHES))])
_BRANCH_PLACES = np.array([len(b[2]) for b in BRANCHES])

INDUSTRIES = (
    "制造业", "批发和零售业", "信息技术服务", "金融业", "房地产业", "教育", "医疗卫生", "交通运输和物流",
    "住宿和餐饮业", "建筑业", "能源化工", "文化传媒", "专业咨询服务", "政府及公共机构",
)
ACQUISITION = ("referral", "online_ads", "search", "store_walk_in", "exhibition", "telesales", "wechat",
               "partner", "event")
_ACQ_INDIVIDUAL = (0.10, 0.22, 0.18, 0.22, 0.02, 0.04, 0.17, 0.02, 0.03)
_ACQ_ENTERPRISE = (0.10, 0.08, 0.12, 0.03, 0.22, 0.20, 0.05, 0.15, 0.05)
GENDERS = ("M", "F")
CUSTOMER_TYPES = ("individual", "enterprise")
_MOBILE_PREFIXES = np.array([130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156,
                             157, 158, 159, 166, 170, 173, 175, 176, 177, 178, 180, 181, 182, 183, 185, 186,
                             187, 188, 189, 198, 199], dtype=np.int64)
_FREE_MAIL = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "sina.com", "foxmail.com",
              "hotmail.com", "icloud.com")
_FREE_MAIL_WEIGHTS = (0.35, 0.2, 0.08, 0.08, 0.08, 0.05, 0.06, 0.05, 0.05)
_COMPANY_MAILBOXES = ("info", "sales", "purchase", "admin", "contact", "finance", "procurement")
STAFF_DOMAIN = "hxmall.com.cn"

CATALOG = (
    ("数码电子", 900, 0.22, ("华为", "小米", "Apple", "联想 Lenovo", "OPPO", "vivo", "Sony", "Dell", "罗技 Logitech"),
     ("智能手机", "平板电脑", "笔记本电脑", "蓝牙耳机", "智能手表", "移动电源", "无线鼠标", "显示器", "机械键盘")),
    ("办公用品", 60, 0.14, ("得力", "晨光", "齐心", "3M", "惠普 HP", "Brother"),
     ("A4复印纸 5包装", "中性笔 12支装", "文件柜", "激光打印机", "硒鼓", "人体工学办公椅", "白板", "碎纸机")),
    ("家居生活", 200, 0.14, ("宜家 IKEA", "美的", "九阳", "苏泊尔", "小熊", "Dyson"),
     ("电饭煲", "空气炸锅", "无线吸尘器", "加湿器", "床上四件套", "收纳箱", "保温杯")),
    ("服饰鞋包", 300, 0.13, ("优衣库 UNIQLO", "李宁", "安踏", "Nike", "adidas", "波司登"),
     ("羽绒服", "跑步鞋", "纯棉T恤", "双肩包", "冲锋衣", "休闲裤")),
    ("食品饮料", 80, 0.13, ("三只松鼠", "良品铺子", "蒙牛", "伊利", "农夫山泉", "五粮液", "Nespresso"),
     ("坚果礼盒", "纯牛奶 24盒", "矿泉水 24瓶", "白酒 500ml", "咖啡胶囊 50粒", "茶叶礼盒")),
    ("美妆个护", 250, 0.11, ("兰蔻 Lancôme", "雅诗兰黛", "欧莱雅", "SK-II", "百雀羚", "飞利浦 Philips"),
     ("精华液", "保湿面霜", "防晒霜", "电动牙刷", "剃须刀", "香水 50ml")),
    ("运动户外", 300, 0.08, ("迪卡侬 Decathlon", "Keep", "牧高笛", "探路者", "The North Face"),
     ("瑜伽垫", "家用跑步机", "露营帐篷", "登山杖", "哑铃套装", "骑行头盔")),
    ("企业服务", 6000, 0.05, ("金蝶", "用友", "钉钉", "企业微信", "Microsoft", "阿里云"),
     ("ERP 年度订阅", "云服务器 年付", "企业邮箱 50用户", "财务软件 标准版", "技术支持服务包", "Office 365 商业版")),
)
CATEGORIES = tuple(c[0] for c in CATALOG)
_VARIANTS = ("", "", "", "Pro", "Max", "2026款", "升级版", "经典款", "标准版", "礼盒装", "Lite")

ORDER_CHANNELS = ("store", "online", "app", "wechat_mini_program", "phone", "sales_rep")
_ORDER_CHANNELS_INDIVIDUAL = (0.25, 0.35, 0.22, 0.15, 0.03, 0.0)
_ORDER_CHANNELS_ENTERPRISE = (0.10, 0.20, 0.0, 0.0, 0.20, 0.50)
_INSTANT_CHANNELS = (0, 4, 5)  # paid at the counter or invoiced: completed at once, never pending for long
STATUSES = ("pending", "completed", "cancelled", "refunded")
CURRENCIES = ("CNY",)
PENDING, COMPLETED, CANCELLED, REFUNDED = range(4)

CONTACT_CHANNELS = ("phone", "email", "wechat", "visit", "web", "social", "event", "sms")
_CONTACT_INDIVIDUAL = (0.20, 0.10, 0.35, 0.04, 0.15, 0.10, 0.03, 0.03)
_CONTACT_ENTERPRISE = (0.30, 0.25, 0.15, 0.20, 0.03, 0.0, 0.07, 0.0)
INTERACTION_TYPES = ("inquiry", "follow_up", "marketing", "after_sales", "complaint", "care_call",
                     "business_visit", "event_invite")
_INTERACTION_WEIGHTS = (0.28, 0.22, 0.2, 0.12, 0.05, 0.13, 0.0, 0.0)

TICKET_CATEGORIES = ("产品质量", "物流配送", "退换货", "账单发票", "售后维修", "账户问题", "咨询建议")
_TICKET_WEIGHTS = (0.2, 0.2, 0.17, 0.1, 0.15, 0.08, 0.1)
SEVERITIES = ("low", "medium", "high", "urgent")
_SEVERITY_WEIGHTS = (0.4, 0.4, 0.15, 0.05)

TIERS = ("strategic", "vip", "key", "regular", "potential")
_TIER_WEIGHTS = (0.15, 0.35, 0.25, 0.12, 0.13)
_OVERRIDE_REASONS = {
    "strategic": ("集团战略合作伙伴，总部指定", "Strategic account per HQ framework agreement", "董事会指定重点客户"),
    "vip": ("年度框架协议客户，合同约定VIP待遇", "重大投诉补偿，临时升级VIP", "VIP per regional director approval"),
    "key": ("新开拓大客户，给予观察期待遇", "行业标杆客户", "Key account: multi-year contract"),
    "regular": ("信用风险，暂停VIP权益", "Downgrade after contract termination", "关联交易审查期间"),
    "potential": ("展会获客，重点培育", "招投标进行中", "Pilot project under evaluation"),
}
_OVERRIDE_ADMINS = ("crm_admin", "王敏（销售总监）", "ops_lead", "system")

_HOUR_WEIGHTS = np.array([1, .5, .3, .2, .2, .4, 1, 2, 4, 7, 9, 9, 8, 8, 9, 9, 8, 7, 7, 8, 9, 8, 6, 3], float)
_HOUR_WEIGHTS /= _HOUR_WEIGHTS.sum()

ID_FORMATS = {  # prefix, digits
    "customer": ("C", 7), "manager": ("M", 4), "product": ("P", 5), "order": ("O", 9),
    "interaction": ("I", 9), "ticket": ("T", 8), "survey": ("S", 8), "refund": ("R", 8),
    "crm_record": ("5725767", 12),  # the CRM's own record id, 19 digits like Zoho's
}


# ---------------------------------------------------------------------------------------------
# How each file is dirtied and how each kind of broken row is made


@dataclass(frozen=True)
class _Dirt:
    timestamps: int  # the file's usual style, an index into TS_STYLES; other styles appear in 15% of rows
    null_word: float  # share of nulls spelled NULL instead of empty
    header: str  # plain | upper | title | spaced
    thousands: float = 0.0  # share of amounts >= 1,000 written with thousands separators


TS_STYLES = ("iso+08:00", "iso-utc-z", "iso-naive", "space-naive")
_TS_SUFFIXES = ("+08:00", "Z", "", "")
DIRT = {
    "crm_account_managers": _Dirt(3, 0.0, "title"),
    "crm_customers": _Dirt(3, 0.5, "upper"),
    "crm_interactions": _Dirt(1, 0.0, "spaced"),
    "crm_tickets": _Dirt(0, 0.3, "title"),
    "crm_surveys": _Dirt(2, 0.0, "plain"),
    "crm_tier_overrides": _Dirt(3, 1.0, "upper"),
    "sales_products": _Dirt(0, 0.0, "spaced", thousands=0.4),
    "sales_orders": _Dirt(0, 0.2, "title", thousands=0.3),
    "sales_order_items": _Dirt(0, 0.0, "upper", thousands=0.1),
    "sales_refunds": _Dirt(3, 0.0, "spaced", thousands=0.5),
}
# One file is exported with its columns in another order, as a differently configured CRM view would.
TICKET_COLUMNS = ("opened_at", "ticket_id", "customer_id", "severity", "category", "csat", "resolved_at",
                  "updated_at")

_KINDS_BY_FILE = {
    "crm_account_managers": ("bad_timestamp", "missing_key", "duplicate_key", "field_count"),
    "crm_customers": ("bad_number", "bad_timestamp", "missing_key", "duplicate_key", "field_count"),
    "sales_products": ("bad_number", "bad_timestamp", "missing_key", "duplicate_key", "field_count"),
    "crm_interactions": ("bad_timestamp", "missing_key", "unknown_fk", "duplicate_key", "field_count"),
    "crm_tickets": ("bad_number", "bad_timestamp", "missing_key", "unknown_fk", "duplicate_key", "field_count"),
    "crm_surveys": ("bad_number", "bad_timestamp", "missing_key", "unknown_fk", "duplicate_key", "field_count"),
    "crm_tier_overrides": ("bad_timestamp", "missing_key", "unknown_fk", "duplicate_key", "field_count"),
    "sales_orders": ("bad_number", "bad_timestamp", "missing_key", "unknown_fk", "future_order", "duplicate_key",
                     "field_count"),
    "sales_order_items": ("bad_number", "missing_key", "unknown_fk", "negative_quantity", "duplicate_key",
                          "field_count"),
    "sales_refunds": ("bad_number", "bad_timestamp", "missing_key", "unknown_fk", "duplicate_key", "field_count"),
}
_BAD_NUMBER = {
    "crm_customers": ("employee_count", ("约200人", "200+", "N/A", "两百")),
    "sales_products": ("list_price", ("¥1,299.00", "N/A", "12.9.9", "面议")),
    "crm_tickets": ("csat", ("5星", "满意", "N/A", "4.5")),
    "crm_surveys": ("nps", ("十", "N/A", "9分", "7.5")),
    "sales_orders": ("net_amount", ("¥1,299.00", "N/A", "1.234.50", "12O.00")),
    "sales_order_items": ("unit_price", ("¥35.00", "N/A", "12.9.9", "三十")),
    "sales_refunds": ("amount", ("¥88.00", "N/A", "1.234.50", "全额")),
}
_BAD_TIMESTAMP = {
    "crm_account_managers": "updated_at", "crm_customers": "created_at", "sales_products": "updated_at",
    "crm_interactions": "occurred_at", "crm_tickets": "opened_at", "crm_surveys": "answered_at",
    "crm_tier_overrides": "valid_from", "sales_orders": "order_ts", "sales_refunds": "refunded_at",
}
_BAD_TIMESTAMP_VALUES = ("{y}-02-30 10:15:00", "31/10/{y} 14:22", "{y}年10月31日 14:22",
                         "{y}-13-05T08:00:00+08:00", "0000-00-00 00:00:00")
_BAD_DATE_VALUES = ("{y}-02-30", "{y}/13/01", "0000-00-00", "31.12.{y}")
_DUPLICATE_CHANGE = {  # the column the second copy of a duplicated key differs in, and values to pick from
    "crm_account_managers": ("branch_code", BRANCH_CODES),
    "crm_customers": ("city", CITIES),
    "sales_products": ("category", CATEGORIES),
    "crm_interactions": ("channel", CONTACT_CHANNELS),
    "crm_tickets": ("severity", SEVERITIES),
    "crm_surveys": ("csat", ("1", "2", "3", "4", "5")),
    "crm_tier_overrides": ("tier", TIERS),
    "sales_orders": ("channel", ORDER_CHANNELS),
    "sales_order_items": ("quantity", ("1", "2", "3")),
    "sales_refunds": ("amount", ("1.00", "2.00")),
}
_FRESH_ID = {"sales_orders": "order", "crm_interactions": "interaction", "crm_tickets": "ticket",
             "crm_surveys": "survey", "sales_refunds": "refund"}


# ---------------------------------------------------------------------------------------------
# Byte-matrix formatting


_POWERS = {w: 10 ** np.arange(w - 1, -1, -1, dtype=np.int64) for w in range(1, 20)}


def _fixed(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers."""
    out = np.empty((x.size, width), dtype=np.uint8)
    for i in range(width - 1, -1, -1):
        # Dividing by a scalar lets numpy use its fast constant-divisor path (an array divisor does not).
        quotient = x // 10
        out[:, i] = x - quotient * 10 + 48
        x = quotient
    return out


def _digits(x: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers, left-padded with zero bytes (dropped on output)."""
    width = len(str(int(x.max()))) if x.size else 1
    out = _fixed(x, width)
    pows = _POWERS[width]
    out[(x[:, None] < pows) & (pows > 1)] = 0
    return out


def _grouped(x: np.ndarray) -> np.ndarray:
    """Like _digits, with a thousands separator wherever digits continue to its left."""
    digits = _digits(x)
    width = digits.shape[1]
    columns = []
    for j in range(width):
        columns.append(digits[:, j:j + 1])
        right = width - j - 1
        if right and right % 3 == 0:
            columns.append(np.where(digits[:, j:j + 1] != 0, ord(","), 0).astype(np.uint8))
    return np.concatenate(columns, axis=1)


def _lit(text: bytes, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text)))


def _from_bytes(values: list[bytes]) -> np.ndarray:
    arr = np.array(values, dtype="S")
    return arr.view(np.uint8).reshape(len(values), arr.itemsize)


def _widen(mat: np.ndarray, width: int) -> np.ndarray:
    if mat.shape[1] >= width:
        return np.array(mat)
    return np.pad(mat, ((0, 0), (0, width - mat.shape[1])))


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proleptic Gregorian (year, month, day) from days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _date_matrix(days: np.ndarray) -> np.ndarray:
    y, m, d = _civil(days)
    dash = _lit(b"-", days.size)
    return np.concatenate([_fixed(y, 4), dash, _fixed(m, 2), dash, _fixed(d, 2)], axis=1)


def _join(mats: list[np.ndarray]) -> tuple[bytes, np.ndarray]:
    """CSV lines from per-column byte matrices; returns the bytes and each line's length."""
    n = mats[0].shape[0]
    parts = []
    for mat in mats:
        parts += [mat, _lit(b",", n)]
    parts[-1] = _lit(b"\n", n)
    full = np.concatenate(parts, axis=1)
    keep = full != 0
    return full[keep].tobytes(), keep.sum(axis=1)


def _csv(value: str) -> str:
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def _epoch(day: date) -> int:
    """Epoch seconds of local (Asia/Shanghai) midnight starting ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) - TZ_OFFSET


def _apportion(n: int, shares: list[float]) -> np.ndarray:
    """Integer counts summing to n, as close to the shares as possible (largest remainder)."""
    raw = np.array(shares) / sum(shares) * n
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def _when(rng: np.random.Generator, lo, hi) -> np.ndarray:
    """Times in [lo, hi) with a realistic hour of day (few orders at 4 a.m.) where the day allows."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.maximum(np.asarray(hi, dtype=np.int64), lo + 1)
    n = np.broadcast(lo, hi).size
    t = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    midnight = (t + TZ_OFFSET) // DAY * DAY - TZ_OFFSET
    shaped = midnight + rng.choice(24, n, p=_HOUR_WEIGHTS) * HOUR + rng.integers(0, HOUR, n)
    return np.where((shaped >= lo) & (shaped < hi), shaped, t)


def _chunks(idx: np.ndarray) -> list[np.ndarray]:
    """Row selections of at most WRITE_CHUNK rows (none for an empty selection)."""
    return [idx[i:i + WRITE_CHUNK] for i in range(0, idx.size, WRITE_CHUNK)]


def _choice(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(p.size, n, p=p / p.sum())


# ---------------------------------------------------------------------------------------------
# One output file


class _Sink:
    """One extract file: formats columns, buffers lines, injects broken rows, appends to disk."""

    def __init__(self, gen: _Generator, folder: int, entity: contract.Entity):
        self.gen, self.folder, self.entity, self.name = gen, folder, entity, entity.name
        self.extract_date = gen.dates[folder]
        self.folder_end = int(gen.ends[folder])
        self.path = gen.out / self.extract_date.isoformat() / entity.file_name
        self.dirty = gen.dirty
        self.rng = gen.rng("dirt", folder, entity.name)
        self.profile = DIRT[entity.name]
        gb = self.dirty and folder == 0 and entity.name == "crm_customers"
        self.encoding = "gb18030" if gb else "utf-8"
        self.columns = [c.name for c in entity.columns]
        if self.dirty and entity.name == "crm_tickets":
            self.columns = list(TICKET_COLUMNS)
        header = ",".join(self._header_name(c) for c in self.columns) + "\n"
        bom = b"\xef\xbb\xbf" if self.dirty and entity.name == "crm_account_managers" else b""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(bom + header.encode(self.encoding))
        self.lines = 1
        self.real_rows = 0
        self.broken_rows = 0
        self.buffer: list[tuple[bytes, np.ndarray, dict | None]] = []
        self.buffered = 0
        self.kinds = [k for k in KINDS if k in _KINDS_BY_FILE[entity.name]]
        self.rng.shuffle(self.kinds)
        self.injected = 0
        self.kinds_seen: list[str] = []
        self.used_orders: set[int] = set()

    def _header_name(self, column: str) -> str:
        if not self.dirty or self.profile.header == "plain":
            return column
        if self.profile.header == "upper":
            return column.upper()
        if self.profile.header == "title":
            return column.title()
        return " " * int(self.rng.integers(0, 2)) + column + " " * int(self.rng.integers(0, 3))

    @property
    def rows(self) -> int:
        return self.real_rows + self.broken_rows

    # -- column formatters --------------------------------------------------------------------

    def _null(self, mat: np.ndarray, null: np.ndarray | None) -> np.ndarray:
        if null is None or not null.any():
            return mat
        mat = _widen(mat, 4)
        mat[null] = 0
        if self.dirty and self.profile.null_word:
            word = null & (self.rng.random(null.size) < self.profile.null_word)
            mat[word, :4] = np.frombuffer(b"NULL", dtype=np.uint8)
        return mat

    def optional(self, p: float, n: int) -> np.ndarray | None:
        """A mask of optional values left out of a dirty export (the contract allows the null)."""
        return self.rng.random(n) < p if self.dirty else None

    def ids(self, kind: str, nums: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        prefix, width = ID_FORMATS[kind]
        nums = np.asarray(nums, dtype=np.int64)
        if null is not None:
            nums = np.where(null, 0, nums)
        width = max(width, len(str(int(nums.max())))) if nums.size else width
        mat = np.concatenate([_lit(prefix.encode(), nums.size), _fixed(nums, width)], axis=1)
        return self._null(mat, null)

    def ints(self, x: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        if null is not None:
            x = np.where(null, 0, x)
        return self._null(_digits(x), null)

    def pool(self, values: tuple[str, ...], idx: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        idx = np.asarray(idx)
        if null is not None:
            idx = np.where(null, 0, idx)
        return self._null(self.gen.pool_matrix(values, self.encoding)[idx], null)

    def text(self, values: list[str], null: np.ndarray | None = None) -> np.ndarray:
        return self._null(_from_bytes([_csv(v).encode(self.encoding) for v in values]), null)

    def money(self, cents: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        cents = np.asarray(cents, dtype=np.int64)
        if null is not None:
            cents = np.where(null, 0, cents)
        n = cents.size
        mat = np.concatenate([_digits(cents // 100), _lit(b".", n), _fixed(cents % 100, 2)], axis=1)
        if self.dirty and self.profile.thousands:
            grouped = (cents >= 100_000) & (self.rng.random(n) < self.profile.thousands)
            if null is not None:
                grouped &= ~null
            if grouped.any():
                sub = cents[grouped]
                quote = _lit(b'"', sub.size)
                alt = np.concatenate([quote, _grouped(sub // 100), _lit(b".", sub.size), _fixed(sub % 100, 2), quote],
                                     axis=1)
                width = max(mat.shape[1], alt.shape[1])
                mat = _widen(mat, width)
                mat[grouped] = _widen(alt, width)
        return self._null(mat, null)

    def ts(self, t: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        n = t.size
        if null is not None:
            t = np.where(null, 0, t)
        if self.dirty:
            weights = np.full(len(TS_STYLES), 0.05)
            weights[self.profile.timestamps] = 1 - 0.05 * (len(TS_STYLES) - 1)
            style = self.rng.choice(len(TS_STYLES), n, p=weights)
        else:
            style = np.zeros(n, dtype=np.int64)
        shown = np.where(style == 1, t, t + TZ_OFFSET)
        days = shown // DAY
        secs = shown - days * DAY
        sep = np.where(style == 3, ord(" "), ord("T")).astype(np.uint8)[:, None]
        colon = _lit(b":", n)
        suffix = self.gen.pool_matrix(_TS_SUFFIXES, "ascii")[style]
        mat = np.concatenate([_date_matrix(days), sep, _fixed(secs // HOUR, 2), colon,
                              _fixed(secs // 60 % 60, 2), colon, _fixed(secs % 60, 2), suffix], axis=1)
        return self._null(mat, null)

    def date(self, days: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
        days = np.asarray(days, dtype=np.int64)
        if null is not None:
            days = np.where(null, 0, days)
        return self._null(_date_matrix(days), null)

    def ts_text(self, t: int) -> str:
        mat = self.ts(np.array([t]))
        return mat[mat != 0].tobytes().decode("ascii")

    # -- writing --------------------------------------------------------------------------------

    def write(self, fields: dict[str, np.ndarray], aux: dict[str, np.ndarray] | None = None) -> None:
        mats = [fields[c] for c in self.columns]
        if mats[0].shape[0] == 0:
            return
        blob, lengths = _join(mats)
        self.buffer.append((blob, lengths, aux))
        self.buffered += lengths.size
        if self.buffered >= BUFFER_ROWS:
            self._flush(final=False)

    def close(self) -> None:
        self._flush(final=True)

    def _kinds_for(self, n: int, final: bool) -> list[str]:
        before, after = self.real_rows, self.real_rows + n
        count = after // BROKEN_EVERY - before // BROKEN_EVERY
        if final and self.rng.random() < (after % BROKEN_EVERY) / BROKEN_EVERY:
            count += 1
        kinds = [self.kinds[(self.injected + i) % len(self.kinds)] for i in range(count)]
        self.injected += count
        if final and self.folder == 0:
            kinds += [k for k in self.kinds if k not in self.kinds_seen and k not in kinds]
        self.kinds_seen += kinds
        return kinds

    def _flush(self, final: bool) -> None:
        if not self.buffer:
            return
        blob = b"".join(b for b, _, _ in self.buffer)
        lengths = np.concatenate([lengths for _, lengths, _ in self.buffer])
        aux = None
        if self.buffer[0][2] is not None:
            aux = {k: np.concatenate([a[k] for _, _, a in self.buffer]) for k in self.buffer[0][2]}
        self.buffer, self.buffered = [], 0
        n = lengths.size
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        inserts: list[tuple[int, int, bytes, str]] = []
        if self.dirty:
            for kind in self._kinds_for(n, final):
                i = self.gen.template_index(self, n, aux)
                line = blob[offsets[i]:offsets[i + 1]].decode(self.encoding).rstrip("\n")
                template = dict(zip(self.columns, next(csv.reader([line])), strict=True))
                for text in self.gen.broken_lines(self, kind, template):
                    position = int(self.rng.integers(0, n + 1))
                    inserts.append((position, len(inserts), (text + "\n").encode(self.encoding), kind))
        inserts.sort()
        pieces, previous = [], 0
        for j, (position, _, line, kind) in enumerate(inserts):
            pieces += [blob[offsets[previous]:offsets[position]], line]
            previous = position
            self.gen.expected.append((self.extract_date.isoformat(), self.entity.file_name,
                                      self.lines + position + j + 1, kind))
        pieces.append(blob[offsets[previous]:])
        with self.path.open("ab") as handle:
            handle.writelines(pieces)
        self.lines += n + len(inserts)
        self.real_rows += n
        self.broken_rows += len(inserts)


# ---------------------------------------------------------------------------------------------
# The generator


@dataclass
class GenerationSummary:
    out_dir: Path
    seed: int
    dirty: bool
    seconds: float
    rows: dict[str, dict[str, int]]  # extract date -> file -> data lines (broken rows included)
    customers: int  # customers exported over all folders
    broken_rows: int
    bytes: int
    personas: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        dates = list(self.rows)
        files = [e.file_name for e in contract.ENTITIES]
        shown = dates if len(dates) <= 4 else dates[:3] + [dates[-1]]
        lines = [f"tierline sample extracts -> {self.out_dir} (seed {self.seed}, "
                 f"{'dirty' if self.dirty else 'clean'}, {len(dates)} folder(s))"]
        lines.append(f"  {'file':<26}" + "".join(f"{d:>13}" for d in shown))
        for name in files:
            lines.append(f"  {name:<26}" + "".join(f"{self.rows[d].get(name, 0):>13,}" for d in shown))
        mix = ", ".join(f"{k} {v:,}" for k, v in self.personas.items())
        lines.append(f"  customers {self.customers:,}: {mix}")
        if self.dirty:
            lines.append(f"  broken rows injected: {self.broken_rows:,} (see _expected_quarantine.csv)")
        lines.append(f"  {self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s")
        return "\n".join(lines)


class _Generator:
    def __init__(self, out_dir: Path, customers: int, days: int, seed: int, start_date: date,
                 history_days: int, dirty: bool, progress: bool):
        if customers < 1:
            raise ValueError(f"customers must be at least 1, got {customers}")
        if days < 1:
            raise ValueError(f"days must be at least 1 (the full snapshot), got {days}")
        if history_days < MIN_HISTORY_DAYS:
            raise ValueError(
                f"history_days must be at least {MIN_HISTORY_DAYS} so that churned and reactivated customers "
                f"fit (a purchase, a gap of over a year, a return), got {history_days}"
            )
        self.out = Path(out_dir)
        names = {d.isoformat() for d in (start_date + timedelta(days=k) for k in range(days))}
        stale = sorted(p.name for p in self.out.glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]")
                       if p.name not in names) if self.out.is_dir() else []
        if stale:
            raise ValueError(
                f"{self.out} already holds extract folders this run would not write ({', '.join(stale[:3])}...); "
                "a pipeline would load them together: use an empty folder or delete them"
            )
        self.n, self.days, self.seed, self.history_days = customers, days, seed, history_days
        self.dirty, self.progress = dirty, progress
        self.dates = [start_date + timedelta(days=k) for k in range(days)]
        self.day_numbers = [(d - date(1970, 1, 1)).days for d in self.dates]
        self.ends = np.array([_epoch(d) + DAY for d in self.dates], dtype=np.int64)
        self.t0 = int(self.ends[0])
        self.t_start = _epoch(start_date) - history_days * DAY
        history = list(range(self.t_start, self.t0, WINDOW_DAYS * DAY)) + [self.t0]
        self.windows = list(zip(history[:-1], history[1:], strict=True))
        self.windows += [(int(self.ends[k - 1]), int(self.ends[k])) for k in range(1, days)]
        self.counters = dict.fromkeys(ID_FORMATS, 0)
        self.expected: list[tuple[str, str, int, str]] = []
        self._pools: dict[tuple[int, str], np.ndarray] = {}
        self._pool_keep: list[tuple] = []
        self.deleted_orders: list[int] = []
        empty = np.zeros(0, dtype=np.int64)
        self.refunds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [(empty, empty, empty)]

    # -- helpers --------------------------------------------------------------------------------

    def rng(self, *keys) -> np.random.Generator:
        words = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
        return np.random.default_rng(np.random.SeedSequence([self.seed, *words]))

    def pool_matrix(self, values: tuple[str, ...], encoding: str) -> np.ndarray:
        key = (id(values), encoding)
        if key not in self._pools:
            # Keyed by identity (hashing a 5,000-name tuple per call is slow); keeping the tuple alive
            # guarantees its id is not reused by another pool.
            self._pool_keep.append(values)
            self._pools[key] = _from_bytes([_csv(v).encode(encoding) for v in values])
        return self._pools[key]

    def folder_of(self, t: np.ndarray) -> np.ndarray:
        """0 for the snapshot, k for incremental day k, ``days`` for after the last folder."""
        return np.searchsorted(self.ends, t, side="right")

    def allocate(self, kind: str, n: int) -> np.ndarray:
        start = self.counters[kind]
        self.counters[kind] += n
        return np.arange(start + 1, start + n + 1, dtype=np.int64)

    def format_id(self, kind: str, num: int) -> str:
        prefix, width = ID_FORMATS[kind]
        return f"{prefix}{num:0{width}d}"

    # -- reference data -------------------------------------------------------------------------

    def build_pools(self) -> None:
        zh, en = Faker("zh_CN"), Faker("en_US")
        zh.seed_instance(self.seed)
        en.seed_instance(self.seed)
        self.zh_last = [zh.last_name() for _ in range(600)]
        self.zh_first = [zh.first_name() for _ in range(2500)]
        self.en_first = [en.first_name() for _ in range(600)]
        self.en_last = [en.last_name() for _ in range(600)]
        self.zh_company = [zh.company() for _ in range(2500)]
        self.en_company = [en.company() + s for s in [""] * 420 + [" (China) Co., Ltd."] * 180]
        self.user_names = [zh.user_name() for _ in range(2500)] + [en.user_name() for _ in range(1500)]

    def person_names(self, rng, n: int) -> list[str]:
        chinese = rng.random(n) < 0.88
        last = rng.integers(0, 600, n).tolist()
        first = rng.integers(0, 2500, n).tolist()
        en_first = rng.integers(0, 600, n).tolist()
        return [self.zh_last[a] + self.zh_first[b] if c else f"{self.en_first[d]} {self.en_last[a]}"
                for c, a, b, d in zip(chinese.tolist(), last, first, en_first, strict=True)]

    def staff_email(self, rng) -> str:
        return f"{self.user_names[int(rng.integers(0, len(self.user_names)))]}@{STAFF_DOMAIN}"

    def build_managers(self) -> None:
        rng = self.rng("managers")
        real = max(5, round(self.n / 500))
        reserved = 4 + self.days // 30
        total = real + reserved
        is_reserved = np.zeros(total, dtype=bool)
        is_reserved[rng.choice(total, reserved, replace=False)] = True
        weights = [b[1] for b in BRANCHES]
        branch = _choice(rng, weights, total)
        real_idx = np.flatnonzero(~is_reserved)
        branch[real_idx[: len(BRANCHES)]] = np.arange(min(len(BRANCHES), real))
        self.m_branch = branch
        self.m_name = self.person_names(rng, total)
        self.m_email = [self.staff_email(rng) for _ in range(total)]
        self.m_updated = _when(rng, np.full(total, self.t_start), self.t0)
        self.m_reserved = np.flatnonzero(is_reserved).tolist()
        self.m_real = real_idx
        self.managers_by_branch = [real_idx[branch[real_idx] == b] for b in range(len(BRANCHES))]

    def build_products(self) -> None:
        rng = self.rng("products")
        real = min(5000, 200 + self.n // 500)
        reserved, deleted = 4 + self.days // 30, 2
        total = real + reserved + deleted
        ghosts = rng.choice(total, reserved + deleted, replace=False)
        self.p_reserved = sorted(ghosts[:reserved].tolist())
        self.p_deleted = sorted(ghosts[reserved:].tolist())
        category = _choice(rng, [c[2] for c in CATALOG], total)
        names = []
        for cat in category.tolist():
            _, _, _, brands, kinds = CATALOG[cat]
            variant = _VARIANTS[int(rng.integers(0, len(_VARIANTS)))]
            name = f"{brands[int(rng.integers(0, len(brands)))]} {kinds[int(rng.integers(0, len(kinds)))]}"
            names.append(f"{name} {variant}" if variant else name)
        yuan = np.array([CATALOG[c][1] for c in category.tolist()]) * rng.lognormal(0, 0.7, total)
        yuan = np.maximum(yuan, 2)
        # Shop prices end in .90 below 100 yuan and in 9 above, as price tags do.
        cents = np.where(yuan < 100, np.round(yuan) * 100 - 10, (np.round(yuan / 10) * 10 - 1) * 100)
        self.p_category = category
        self.p_name = names
        self.p_price = cents.astype(np.int64)
        self.p_cost = np.where(rng.random(total) < 0.04, -1,
                               np.round(self.p_price * rng.uniform(0.35, 0.75, total))).astype(np.int64)
        self.p_updated = _when(rng, np.full(total, self.t_start), self.t0)
        is_real = np.ones(total, dtype=bool)
        is_real[ghosts] = False
        real_idx = np.flatnonzero(is_real)
        self.p_by_price = real_idx[np.argsort(self.p_price[real_idx], kind="stable")]
        popular = rng.permutation(real_idx)
        self.p_popular = popular
        self.p_popular_cum = np.cumsum(1 / (np.arange(popular.size) + 5.0) ** 1.1)

    def build_customers(self) -> None:
        rng = self.rng("customers")
        t0, days = self.t0, self.days
        counts = _apportion(self.n, [p.share for p in PERSONAS])
        persona = np.repeat(np.arange(len(PERSONAS)), counts)
        rng.shuffle(persona)
        lo = np.array([p.age_days[0] for p in PERSONAS])[persona]
        hi = np.minimum(np.array([p.age_days[1] for p in PERSONAS])[persona], self.history_days - 1)
        created = [_when(rng, t0 - (hi * DAY).astype(np.int64), t0 - (lo * DAY).astype(np.int64))]
        personas = [persona]
        reserved = 10 + self.n // 2000 + days // 10
        created.append(_when(rng, np.full(reserved, self.t_start), t0 - DAY))
        personas.append(np.full(reserved, RESERVED))
        deleted = 3 + self.n // 200_000
        created.append(self.t_start - rng.integers(30 * DAY, 300 * DAY, deleted))
        personas.append(np.full(deleted, DELETED))
        for k in range(1, days):
            new = rng.binomial(self.n, 0.002)
            created.append(_when(rng, np.full(new, self.ends[k - 1]), self.ends[k]))
            personas.append(np.where(rng.random(new) < 0.65, _P["newcomer"], _P["prospect"]))
        created, persona = np.concatenate(created), np.concatenate(personas)
        order = np.argsort(created, kind="stable")
        created, persona = created[order], persona[order]
        n = created.size
        self.c_created, self.persona = created, persona
        self.c_real = persona < RESERVED
        self.c_reserved = rng.permutation(np.flatnonzero(persona == RESERVED)).tolist()
        self.c_deleted = np.flatnonzero(persona == DELETED)

        def per_persona(attr, ghost_value):
            return np.array([getattr(p, attr) for p in PERSONAS] + [ghost_value, ghost_value])[persona]

        ent = rng.random(n) < per_persona("enterprise", 0.08)
        self.c_enterprise = ent
        home = _choice(rng, [b[1] for b in BRANCHES], n)
        self.c_home = np.where(~ent & (rng.random(n) < 0.03), -1, home)
        self.c_branch = self.c_home.copy()
        self.c_place = self.random_place(rng, home)
        self.c_name = np.array(self.customer_names(rng, ent, self.c_place), dtype=object)
        phones = _MOBILE_PREFIXES[rng.integers(0, _MOBILE_PREFIXES.size, n)] * 10**8 + rng.integers(0, 10**8, n)
        self.c_phone = np.where(rng.random(n) < np.where(ent, 0.05, 0.02), 0, phones)
        self.c_email = np.array(self.customer_emails(rng, ent), dtype=object)
        self.c_email[rng.random(n) > np.where(ent, 0.9, 0.72)] = None
        self.c_gender = np.where(ent | (rng.random(n) < 0.03), -1, rng.integers(0, 2, n))
        age_days = (np.clip(rng.normal(38, 12, n), 18, 80) * 365.25).astype(np.int64)
        self.c_birth = self.day_numbers[0] - age_days - rng.integers(0, 365, n)
        self.c_no_birth = ent | (rng.random(n) < 0.06)
        self.c_industry = np.where(ent, rng.integers(0, len(INDUSTRIES), n), -1)
        employees = np.clip(rng.lognormal(np.log(60), 1.6, n), 3, 300_000).astype(np.int64)
        self.c_employees = np.where(ent & (rng.random(n) > 0.05), employees, -1)
        managed = ent | (rng.random(n) < per_persona("managed", 0.0))
        self.c_manager = np.full(n, -1, dtype=np.int64)
        for b in range(len(BRANCHES)):
            who = np.flatnonzero(managed & (home == b))
            pool = self.managers_by_branch[b] if self.managers_by_branch[b].size else self.m_real
            self.c_manager[who] = pool[rng.integers(0, pool.size, who.size)]
        acq = np.where(ent, _choice(rng, _ACQ_ENTERPRISE, n), _choice(rng, _ACQ_INDIVIDUAL, n))
        self.c_acquisition = np.where(rng.random(n) < 0.05, -1, acq)
        self.c_referrer = self.referrers(rng, self.c_acquisition == ACQUISITION.index("referral"))
        fresh = rng.random(n) < 0.55
        later = created + ((self.ends[np.minimum(self.folder_of(created), days - 1)] - 1 - created)
                           * rng.random(n) ** 2).astype(np.int64)
        self.c_updated = np.where(fresh | (created >= t0), created, later)
        self.affinity = rng.normal(per_persona("affinity", 0.0) + 0.6 * ent, 1.0)
        self.build_timelines(rng)

    @staticmethod
    def random_place(rng, branch: np.ndarray) -> np.ndarray:
        """Mostly the branch's own city, otherwise another city the branch covers."""
        others = (rng.random(branch.size) * (_BRANCH_PLACES[branch] - 1)).astype(np.int64)
        return _BRANCH_FIRST_PLACE[branch] + np.where(rng.random(branch.size) < 0.7, 0, 1 + others)

    def customer_names(self, rng, ent: np.ndarray, place: np.ndarray) -> list[str]:
        n = ent.size
        people = self.person_names(rng, n)
        zh = rng.random(n) < 0.85
        company = rng.integers(0, len(self.zh_company), n).tolist()
        prefix = rng.random(n) < 0.5
        foreign = rng.integers(0, len(self.en_company), n).tolist()
        out = []
        for i, is_ent in enumerate(ent.tolist()):
            if not is_ent:
                out.append(people[i])
            elif zh[i]:
                city = _PLACES[place[i]][2].removesuffix("市")
                out.append((city if prefix[i] else "") + self.zh_company[company[i]])
            else:
                out.append(self.en_company[foreign[i]])
        return out

    def customer_emails(self, rng, ent: np.ndarray) -> list[str]:
        n = ent.size
        users = rng.integers(0, len(self.user_names), n).tolist()
        companies = rng.integers(0, len(self.user_names), n).tolist()
        number = rng.integers(1, 1000, n).tolist()
        numbered = (rng.random(n) < 0.5).tolist()
        free = _choice(rng, _FREE_MAIL_WEIGHTS, n).tolist()
        box = rng.integers(0, len(_COMPANY_MAILBOXES), n).tolist()
        tld = rng.choice([".com.cn", ".com", ".cn"], n).tolist()
        out = []
        for i, is_ent in enumerate(ent.tolist()):
            if is_ent:
                out.append(f"{_COMPANY_MAILBOXES[box[i]]}@{self.user_names[companies[i]]}{tld[i]}")
            else:
                user = self.user_names[users[i]] + (str(number[i]) if numbered[i] else "")
                out.append(f"{user}@{_FREE_MAIL[free[i]]}")
        return out

    def referrers(self, rng, referred: np.ndarray) -> np.ndarray:
        """An earlier-created customer for each referral, loyal customers preferred."""
        out = np.full(referred.size, -1, dtype=np.int64)
        who = np.flatnonzero(referred & self.c_real)
        everyone = np.flatnonzero(self.c_real)
        loyal = np.flatnonzero(np.isin(self.persona, [_P["loyal_whale"], _P["loyal"]]))
        for pool, share in ((loyal, 0.6), (everyone, 1.0)):
            pick = who[(out[who] < 0) & (rng.random(who.size) < share)]
            before = np.searchsorted(pool, pick)
            ok = before > 0
            out[pick[ok]] = pool[(rng.random(ok.sum()) * before[ok]).astype(np.int64)]
        return out

    def build_timelines(self, rng) -> None:
        """Purchase and contact rates per customer, piecewise over three segments of its life."""
        persona, created, t0 = self.persona, self.c_created, self.t0
        n = persona.size
        fend = self.ends[np.minimum(self.folder_of(created), self.days - 1)]
        is_ = {name: persona == i for name, i in _P.items()}
        shape = np.array([p.regularity for p in PERSONAS] + [2.0, 2.0])[persona]
        hetero = rng.gamma(shape, 1 / shape)
        rate = np.array([p.orders_per_day for p in PERSONAS] + [0.0, 1 / 60])[persona] * hetero / DAY
        contacts = np.array([p.contacts_per_day for p in PERSONAS] + [0.0, 0.0])[persona] * hetero / DAY
        change = np.full(n, NEVER)
        react = np.full(n, NEVER)
        m2 = np.ones(n)
        a1 = np.full(n, -1, dtype=np.int64)
        a2 = np.full(n, -1, dtype=np.int64)
        contact_anchor = np.full(n, -1, dtype=np.int64)

        def uniform(lo, hi):
            return (lo + rng.random(n) * (hi - lo)).astype(np.int64)

        m = is_["declining"]
        change[m], m2[m] = t0 - 180 * DAY, 0.12
        a1[m] = _when(rng, created[m], change[m])
        m = is_["dormant"]
        change[m] = uniform(t0 - 300 * DAY, t0 - 190 * DAY)[m]
        a1[m] = _when(rng, change[m] - 50 * DAY, change[m])
        m = is_["churned"]
        change[m] = uniform(created + 15 * DAY, t0 - 380 * DAY)[m]
        a1[m] = _when(rng, created[m], change[m])
        m = is_["reactivated"]
        change[m] = uniform(created + 10 * DAY, t0 - 430 * DAY)[m]
        react[m] = uniform(t0 - 55 * DAY, t0 - 5 * DAY)[m]
        a1[m] = _when(rng, created[m], change[m])
        a2[m] = _when(rng, react[m], t0)
        m2[is_["dormant"] | is_["churned"] | is_["reactivated"]] = 0.0
        m = is_["newcomer"]
        a1[m] = _when(rng, created[m], np.minimum(created[m] + 3 * DAY, fend[m]))
        m = is_["occasional"]
        a1[m] = _when(rng, created[m], t0)
        m = persona == DELETED
        a1[m] = _when(rng, np.full(m.sum(), self.t_start), self.t_start + DAY)
        m = is_["prospect"]
        contact_anchor[m] = _when(rng, created[m], fend[m])
        self.t_change, self.t_react = change, react
        self.orders_proc = (rate, m2, (a1, a2))
        lapsed = np.maximum(m2, 0.3)
        self.contacts_proc = (contacts, lapsed, (contact_anchor,))
        self.tickets_proc = ((0.04 * rate + 1 / 2500 / DAY) * self.c_real, np.maximum(m2, 0.2), ())
        self.surveys_proc = ((0.06 * rate + 1 / 3000 / DAY) * self.c_real, np.maximum(m2, 0.2), ())

    def events(self, rng, proc, w0: int, w1: int) -> tuple[np.ndarray, np.ndarray]:
        """Event times in [w0, w1): Poisson per life segment plus each customer's fixed anchors."""
        rate, m2, anchors = proc
        cs, ts = [], []
        for lo, hi, mult in ((self.c_created, self.t_change, 1.0), (self.t_change, self.t_react, m2),
                             (self.t_react, None, 1.0)):
            a = np.maximum(lo, w0)
            b = np.full(a.size, w1) if hi is None else np.minimum(hi, w1)
            lam = rate * mult * np.clip(b - a, 0, None)
            idx = np.flatnonzero(lam > 0)
            c = np.repeat(idx, rng.poisson(lam[idx]))
            cs.append(c)
            ts.append(_when(rng, a[c], b[c]))
        for anchor in anchors:
            c = np.flatnonzero((anchor >= w0) & (anchor < w1))
            cs.append(c)
            ts.append(anchor[c])
        c, t = np.concatenate(cs), np.concatenate(ts)
        order = np.lexsort((c, t))
        return c[order], t[order]

    # -- CRM master data ----------------------------------------------------------------------

    def write_managers(self) -> None:
        rng = self.rng("managers", "changes")
        for k in range(self.days):
            if k == 0:
                idx = self.m_real
            else:
                idx = np.sort(rng.choice(self.m_real, rng.binomial(self.m_real.size, 0.003), replace=False))
                for i in idx.tolist():
                    self.m_email[i] = self.staff_email(rng)
                self.m_updated[idx] = _when(rng, np.full(idx.size, self.ends[k - 1]), self.ends[k])
            sink = self.sinks[k]["crm_account_managers"]
            sink.write(self.manager_fields(sink, idx))

    def manager_fields(self, sink: _Sink, idx: np.ndarray) -> dict[str, np.ndarray]:
        names = [self.m_name[i] for i in idx.tolist()]
        emails = [self.m_email[i] for i in idx.tolist()]
        if sink.dirty:
            names = self.dirty_names(sink.rng, names)
            emails = self.dirty_emails(sink.rng, emails)
        return {
            "manager_id": sink.ids("manager", idx + 1),
            "manager_name": sink.text(names),
            "branch_code": sink.pool(BRANCH_CODES, self.m_branch[idx]),
            "email": sink.text(emails),
            "updated_at": sink.ts(self.m_updated[idx]),
        }

    def write_products(self) -> None:
        rng = self.rng("products", "changes")
        real = np.sort(self.p_by_price)
        names = tuple(self.p_name)
        for k in range(self.days):
            if k == 0:
                idx = real
            else:
                idx = np.sort(rng.choice(real, rng.binomial(real.size, 0.004), replace=False))
                factor = rng.uniform(0.85, 1.15, idx.size)
                self.p_price[idx] = np.maximum(190, np.round(self.p_price[idx] * factor / 100) * 100 - 10)
                self.p_cost[idx] = np.where(self.p_cost[idx] < 0, -1, np.round(self.p_cost[idx] * factor))
                self.p_updated[idx] = _when(rng, np.full(idx.size, self.ends[k - 1]), self.ends[k])
            sink = self.sinks[k]["sales_products"]
            cost = self.p_cost[idx]
            sink.write({
                "product_id": sink.ids("product", idx + 1),
                "product_name": sink.pool(names, idx),
                "category": sink.pool(CATEGORIES, self.p_category[idx]),
                "list_price": sink.money(self.p_price[idx]),
                "unit_cost": sink.money(cost, null=cost < 0),
                "updated_at": sink.ts(self.p_updated[idx]),
            })

    def write_customers(self) -> None:
        rng = self.rng("customers", "changes")
        folder = self.folder_of(self.c_created)
        for k in range(self.days):
            if k == 0:
                idx = np.flatnonzero(self.c_real & (folder == 0))
            else:
                existing = np.flatnonzero(self.c_real & (folder < k))
                changed = np.sort(rng.choice(existing, rng.binomial(existing.size, 0.003), replace=False))
                self.change_customers(rng, changed, k)
                idx = np.union1d(np.flatnonzero(self.c_real & (folder == k)), changed)
            sink = self.sinks[k]["crm_customers"]
            for chunk in _chunks(idx):
                sink.write(self.customer_fields(sink, chunk))

    def change_customers(self, rng, idx: np.ndarray, k: int) -> None:
        """What a CRM user edits on a normal day: contact details, the manager, a move, head count."""
        what = rng.choice(5, idx.size, p=[0.25, 0.2, 0.25, 0.1, 0.2])
        moved = idx[what == 3]
        branch = _choice(rng, [b[1] for b in BRANCHES], moved.size)
        self.c_branch[moved] = branch
        self.c_place[moved] = self.random_place(rng, branch)
        for i, w in zip(idx.tolist(), what.tolist(), strict=True):
            if w == 0:
                prefix = _MOBILE_PREFIXES[rng.integers(0, _MOBILE_PREFIXES.size)]
                self.c_phone[i] = prefix * 10**8 + rng.integers(0, 10**8)
            elif w == 1:
                self.c_email[i] = self.customer_emails(rng, self.c_enterprise[i:i + 1])[0]
            elif w in (2, 3) and (self.c_manager[i] >= 0 or w == 2):
                b = self.c_branch[i]
                pool = self.managers_by_branch[b] if b >= 0 and self.managers_by_branch[b].size else self.m_real
                self.c_manager[i] = pool[rng.integers(0, pool.size)]
            elif w == 4 and self.c_employees[i] >= 0:
                self.c_employees[i] = max(3, round(self.c_employees[i] * rng.uniform(0.8, 1.3)))
        self.c_updated[idx] = _when(rng, np.full(idx.size, self.ends[k - 1]), self.ends[k])

    def customer_fields(self, sink: _Sink, idx: np.ndarray) -> dict[str, np.ndarray]:
        names = self.c_name[idx].tolist()
        emails = self.c_email[idx]
        no_email = np.equal(emails, None)
        emails = ["" if e is None else e for e in emails.tolist()]
        phones = self.phone_text(sink, self.c_phone[idx])
        if sink.dirty:
            names = self.dirty_names(sink.rng, names)
            emails = self.dirty_emails(sink.rng, emails)
        place = self.c_place[idx]
        branch, manager, referrer = self.c_branch[idx], self.c_manager[idx], self.c_referrer[idx]
        return {
            "customer_id": sink.ids("customer", idx + 1),
            "customer_name": sink.text(names),
            "customer_type": sink.pool(CUSTOMER_TYPES, self.c_enterprise[idx].astype(np.int64)),
            "phone": sink.text(phones, null=self.c_phone[idx] == 0),
            "email": sink.text(emails, null=no_email),
            "gender": sink.pool(GENDERS, self.c_gender[idx], null=self.c_gender[idx] < 0),
            "birth_date": sink.date(self.c_birth[idx], null=self.c_no_birth[idx]),
            "province": sink.pool(PROVINCES, _PLACE_PROVINCE[place]),
            "city": sink.pool(CITIES, _PLACE_CITY[place]),
            "branch_code": sink.pool(BRANCH_CODES, branch, null=branch < 0),
            "industry": sink.pool(INDUSTRIES, self.c_industry[idx], null=self.c_industry[idx] < 0),
            "employee_count": sink.ints(self.c_employees[idx], null=self.c_employees[idx] < 0),
            "account_manager_id": sink.ids("manager", manager + 1, null=manager < 0),
            "acquisition_channel": sink.pool(ACQUISITION, self.c_acquisition[idx], null=self.c_acquisition[idx] < 0),
            "referred_by": sink.ids("customer", referrer + 1, null=referrer < 0),
            "created_at": sink.ts(self.c_created[idx]),
            "updated_at": sink.ts(self.c_updated[idx]),
            # About 1% were keyed in the order system and never got a CRM record of their own.
            "crm_record_id": sink.ids("crm_record", idx + 1, null=idx % 100 == 37),
        }

    @staticmethod
    def phone_text(sink: _Sink, phones: np.ndarray) -> list[str]:
        digits = phones.astype(str).tolist()
        if not sink.dirty:
            return digits
        style = sink.rng.choice(6, len(digits), p=[0.45, 0.2, 0.1, 0.04, 0.03, 0.18]).tolist()
        out = []
        for p, s in zip(digits, style, strict=True):
            if s == 1:
                p = f"+86 {p[:3]}-{p[3:7]}-{p[7:]}"
            elif s == 2:
                p = "86" + p
            elif s == 3:
                p = p.translate(_FULLWIDTH)
            elif s == 4:
                p = ("86" + p).translate(_FULLWIDTH)
            elif s == 5:
                p = f"{p[:3]} {p[3:7]} {p[7:]}"
            out.append(p)
        return out

    @staticmethod
    def dirty_names(rng, names: list[str]) -> list[str]:
        u = rng.random(len(names)).tolist()
        out = []
        for name, x in zip(names, u, strict=True):
            if x < 0.04:
                name = " " + name
            elif x < 0.08:
                name = name + "  "
            elif x < 0.10:
                name = "\u3000" + name
            elif x < 0.12:
                # Chinese CRMs pad two-character names to three with a full-width space: 张　伟
                name = name.replace(" ", "\u3000") if " " in name else name[:1] + "\u3000" + name[1:]
            out.append(name)
        return out

    @staticmethod
    def dirty_emails(rng, emails: list[str]) -> list[str]:
        u = rng.random(len(emails)).tolist()
        out = []
        for email, x in zip(emails, u, strict=True):
            if email and x < 0.12:
                user, _, domain = email.partition("@")
                email = f"{user.capitalize()}@{domain.upper()}"
            elif email and x < 0.16:
                email = f" {email} "
            out.append(email)
        return out

    # -- sales --------------------------------------------------------------------------------

    def pick_products(self, rng, affinity: np.ndarray) -> np.ndarray:
        n = affinity.size
        q = 1 / (1 + np.exp(-1.6 * (0.8 * affinity + rng.normal(0, 0.9, n))))
        by_taste = self.p_by_price[np.minimum((q * self.p_by_price.size).astype(np.int64), self.p_by_price.size - 1)]
        cum = self.p_popular_cum
        by_fame = self.p_popular[np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1]), cum.size - 1)]
        return np.where(rng.random(n) < 0.3, by_fame, by_taste)

    def write_orders(self, bar) -> None:
        rng = self.rng("orders")
        for w0, w1 in self.windows:
            c, ts = self.events(rng, self.orders_proc, w0, w1)
            ids = self.allocate("order", c.size)
            gone = self.persona[c] == DELETED
            self.deleted_orders += ids[gone].tolist()
            if (~gone).any():
                self.order_batch(rng, c[~gone], ts[~gone], ids[~gone])
            bar.update()

    def order_batch(self, rng, c: np.ndarray, ts: np.ndarray, ids: np.ndarray) -> None:
        n = c.size
        ent = self.c_enterprise[c]
        n_lines = np.minimum(np.where(ent, 1 + rng.poisson(3.0, n), 1 + rng.poisson(1.3, n)), 30)
        of_line = np.repeat(np.arange(n), n_lines)
        starts = np.cumsum(n_lines) - n_lines
        line_no = np.arange(of_line.size) - starts[of_line] + 1
        product = self.pick_products(rng, self.affinity[c][of_line])
        big = np.ceil(rng.lognormal(1.0, 1.1, of_line.size)).clip(1, 999).astype(np.int64)
        small = np.array([1, 2, 3, 4, 5, 6, 10])[_choice(rng, [.72, .15, .06, .03, .02, .01, .01], of_line.size)]
        qty = np.where(ent[of_line], big, small)
        list_price = self.p_price[product]
        promo = rng.random(of_line.size) < 0.2
        unit = np.where(promo, np.round(list_price * rng.uniform(0.7, 0.95, of_line.size)), list_price)
        unit = np.maximum(unit, 1).astype(np.int64)
        cost = self.p_cost[product]
        gross = np.add.reduceat(qty * unit, starts)
        pct = np.round(gross * np.array([0.05, 0.1, 0.15, 0.2])[rng.integers(0, 4, n)])
        coupon = np.minimum(np.array([1000, 2000, 5000, 10_000, 20_000])[rng.integers(0, 5, n)], gross // 2)
        kind = rng.random(n)
        discount = np.where(kind < 0.18, pct, np.where(kind < 0.3, coupon, 0)).astype(np.int64)
        net = gross - discount
        channel = np.where(ent, _choice(rng, _ORDER_CHANNELS_ENTERPRISE, n), _choice(rng, _ORDER_CHANNELS_INDIVIDUAL, n))
        fate = rng.random(n)
        cancelled = fate < 0.03
        full = (fate >= 0.03) & (fate < 0.042)
        partial = (fate >= 0.042) & (fate < 0.05)
        instant = np.isin(channel, _INSTANT_CHANNELS)
        complete = ts + np.where(instant, rng.integers(0, 1800, n), rng.exponential(30 * HOUR, n).astype(np.int64))
        cancel = ts + 60 + rng.exponential(6 * HOUR, n).astype(np.int64)
        refund = complete + rng.integers(DAY, 30 * DAY, n)
        refund_amount = np.where(full, net, np.maximum(1, np.round(net * rng.uniform(0.1, 0.7, n)))).astype(np.int64)
        created_in = self.folder_of(ts)
        event_folders = [self.folder_of(np.where(cancelled, NEVER, complete)),
                         self.folder_of(np.where(cancelled, cancel, NEVER)),
                         self.folder_of(np.where(full, refund, NEVER))]
        for k in range(self.days):
            touched = created_in == k
            if k:
                for f in event_folders:
                    touched |= f == k
            for sel in _chunks(np.flatnonzero(touched)):
                end = self.ends[k]
                status = np.full(sel.size, PENDING)
                updated = ts[sel].copy()
                done = ~cancelled[sel] & (complete[sel] < end)
                status[done], updated[done] = COMPLETED, complete[sel][done]
                gone = cancelled[sel] & (cancel[sel] < end)
                status[gone], updated[gone] = CANCELLED, cancel[sel][gone]
                back = full[sel] & (refund[sel] < end)
                status[back], updated[back] = REFUNDED, refund[sel][back]
                sink = self.sinks[k]["sales_orders"]
                branch = self.c_home[c[sel]]
                sink.write({
                    "order_id": sink.ids("order", ids[sel]),
                    "customer_id": sink.ids("customer", c[sel] + 1),
                    "order_ts": sink.ts(ts[sel]),
                    "channel": sink.pool(ORDER_CHANNELS, channel[sel]),
                    "branch_code": sink.pool(BRANCH_CODES, branch, null=branch < 0),
                    "status": sink.pool(STATUSES, status),
                    "currency": sink.pool(CURRENCIES, np.zeros(sel.size, dtype=np.int64),
                                          null=sink.optional(0.04, sel.size)),
                    "gross_amount": sink.money(gross[sel]),
                    "discount_amount": sink.money(discount[sel], null=self.zero_as_null(sink, discount[sel])),
                    "net_amount": sink.money(net[sel]),
                    "updated_at": sink.ts(updated),
                })
            for lines in _chunks(np.flatnonzero(created_in[of_line] == k)):
                sink = self.sinks[k]["sales_order_items"]
                line_cost = cost[lines]
                sink.write({
                    "order_id": sink.ids("order", ids[of_line[lines]]),
                    "line_no": sink.ints(line_no[lines]),
                    "product_id": sink.ids("product", product[lines] + 1),
                    "quantity": sink.ints(qty[lines]),
                    "unit_price": sink.money(unit[lines]),
                    "unit_cost": sink.money(line_cost, null=line_cost < 0),
                }, aux={"last": line_no[lines] == n_lines[of_line[lines]], "order": ids[of_line[lines]]})
        refunded = np.flatnonzero((full | partial) & (self.folder_of(refund) < self.days))
        self.refunds.append((ids[refunded], refund[refunded], refund_amount[refunded]))

    @staticmethod
    def zero_as_null(sink: _Sink, amounts: np.ndarray) -> np.ndarray | None:
        """Some exports leave a zero discount empty, which the contract allows."""
        if not sink.dirty:
            return None
        return (amounts == 0) & (sink.rng.random(amounts.size) < 0.5)

    def write_refunds(self) -> None:
        order_ids = np.concatenate([r[0] for r in self.refunds])
        at = np.concatenate([r[1] for r in self.refunds])
        amount = np.concatenate([r[2] for r in self.refunds])
        order = np.lexsort((order_ids, at))
        order_ids, at, amount = order_ids[order], at[order], amount[order]
        ids = self.allocate("refund", order_ids.size)
        folder = self.folder_of(at)
        for k in range(self.days):
            sel = np.flatnonzero(folder == k)
            sink = self.sinks[k]["sales_refunds"]
            sink.write({
                "refund_id": sink.ids("refund", ids[sel]),
                "order_id": sink.ids("order", order_ids[sel]),
                "refunded_at": sink.ts(at[sel]),
                "amount": sink.money(amount[sel]),
            })

    # -- CRM events ---------------------------------------------------------------------------

    def write_interactions(self, bar) -> None:
        rng = self.rng("interactions")
        for w0, w1 in self.windows:
            c, ts = self.events(rng, self.contacts_proc, w0, w1)
            n = c.size
            ent = self.c_enterprise[c]
            channel = np.where(ent, _choice(rng, _CONTACT_ENTERPRISE, n), _choice(rng, _CONTACT_INDIVIDUAL, n))
            kind = _choice(rng, _INTERACTION_WEIGHTS, n)
            kind = np.where(channel == CONTACT_CHANNELS.index("visit"), INTERACTION_TYPES.index("business_visit"), kind)
            kind = np.where(channel == CONTACT_CHANNELS.index("event"), INTERACTION_TYPES.index("event_invite"), kind)
            ids = self.allocate("interaction", n)
            folder = self.folder_of(ts)
            for k in range(self.days):
                sel = np.flatnonzero(folder == k)
                if sel.size:
                    sink = self.sinks[k]["crm_interactions"]
                    sink.write({
                        "interaction_id": sink.ids("interaction", ids[sel]),
                        "customer_id": sink.ids("customer", c[sel] + 1),
                        "channel": sink.pool(CONTACT_CHANNELS, channel[sel]),
                        "interaction_type": sink.pool(INTERACTION_TYPES, kind[sel],
                                                      null=sink.optional(0.03, sel.size)),
                        "occurred_at": sink.ts(ts[sel]),
                    })
            bar.update()

    def satisfaction(self, rng, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NPS (0-10) and CSAT (1-5) around each persona's mood."""
        mood = np.array([p.nps for p in PERSONAS] + [7.0, 7.0])[self.persona[c]]
        nps = np.clip(np.round(rng.normal(mood, 2.0)), 0, 10).astype(np.int64)
        csat = np.clip(np.round(rng.normal(1 + mood / 2.5, 0.8)), 1, 5).astype(np.int64)
        return nps, csat

    def write_tickets(self, bar) -> None:
        rng = self.rng("tickets")
        for w0, w1 in self.windows:
            c, opened = self.events(rng, self.tickets_proc, w0, w1)
            n = c.size
            ids = self.allocate("ticket", n)
            category = _choice(rng, _TICKET_WEIGHTS, n)
            severity = _choice(rng, _SEVERITY_WEIGHTS, n)
            resolved = opened + 600 + rng.lognormal(np.log(20 * HOUR), 1.0, n).astype(np.int64)
            resolved = np.where(rng.random(n) < 0.07, NEVER, resolved)
            _, csat = self.satisfaction(rng, c)
            answered = rng.random(n) < 0.55
            opened_in, resolved_in = self.folder_of(opened), self.folder_of(resolved)
            for k in range(self.days):
                sel = np.flatnonzero((opened_in == k) | ((resolved_in == k) & (k > 0)))
                if not sel.size:
                    continue
                shown = resolved[sel] < self.ends[k]
                sink = self.sinks[k]["crm_tickets"]
                sink.write({
                    "ticket_id": sink.ids("ticket", ids[sel]),
                    "customer_id": sink.ids("customer", c[sel] + 1),
                    "category": sink.pool(TICKET_CATEGORIES, category[sel]),
                    "severity": sink.pool(SEVERITIES, severity[sel]),
                    "opened_at": sink.ts(opened[sel]),
                    "resolved_at": sink.ts(resolved[sel], null=~shown),
                    "csat": sink.ints(csat[sel], null=~(shown & answered[sel])),
                    "updated_at": sink.ts(np.where(shown, resolved[sel], opened[sel])),
                })
            bar.update()

    def write_surveys(self, bar) -> None:
        rng = self.rng("surveys")
        for w0, w1 in self.windows:
            c, at = self.events(rng, self.surveys_proc, w0, w1)
            n = c.size
            ids = self.allocate("survey", n)
            nps, csat = self.satisfaction(rng, c)
            part = rng.random(n)
            folder = self.folder_of(at)
            for k in range(self.days):
                sel = np.flatnonzero(folder == k)
                if sel.size:
                    sink = self.sinks[k]["crm_surveys"]
                    sink.write({
                        "survey_id": sink.ids("survey", ids[sel]),
                        "customer_id": sink.ids("customer", c[sel] + 1),
                        "answered_at": sink.ts(at[sel]),
                        "nps": sink.ints(nps[sel], null=part[sel] < 0.1),
                        "csat": sink.ints(csat[sel], null=(part[sel] >= 0.1) & (part[sel] < 0.25)),
                    })
            bar.update()

    def build_overrides(self) -> None:
        """Manual tiers set in the CRM: a few per thousand customers, some already expired."""
        rng = self.rng("overrides")
        folder = self.folder_of(self.c_created)
        snapshot = np.flatnonzero(self.c_real & (folder == 0))
        weight = (1 + 20 * (self.persona == _P["loyal_whale"]) + 5 * self.c_enterprise
                  + 3 * (self.persona == _P["loyal"]))[snapshot].astype(float)
        count = min(snapshot.size, max(8, round(self.n * 0.0005)))
        first = rng.choice(snapshot, count, replace=False, p=weight / weight.sum())
        today = self.day_numbers[0]
        rows = {0: self.override_rows(rng, first, today - rng.integers(10, 600, count), 0)}
        overridden = set(first.tolist())
        for k in range(1, self.days):
            existing = np.flatnonzero(self.c_real & (folder < k))
            picks = rng.choice(existing, min(existing.size, rng.poisson(max(0.6, count * 0.01))), replace=False)
            picks = np.unique(picks)
            rows[k] = self.override_rows(rng, picks, np.full(picks.size, today + k), k)
            overridden.update(picks.tolist())
        self.override_data = rows
        spare = np.array([i for i in snapshot.tolist() if i not in overridden], dtype=np.int64)
        self.override_spare = rng.permutation(spare).tolist()

    def override_rows(self, rng, who: np.ndarray, valid_from: np.ndarray, k: int) -> dict[str, np.ndarray]:
        n = who.size
        tier = _choice(rng, _TIER_WEIGHTS, n)
        reason = [_OVERRIDE_REASONS[TIERS[t]][int(rng.integers(0, 3))] for t in tier.tolist()]
        today = self.day_numbers[k]
        # The snapshot always has open-ended, expired and running overrides, however few there are.
        end_kind = rng.permutation(np.arange(n) % 3) if k == 0 else rng.integers(0, 3, n)
        past = np.minimum(today - rng.integers(1, 120, n), valid_from + rng.integers(30, 200, n))
        valid_to = np.where(end_kind == 0, -1,
                            np.where(end_kind == 1, np.maximum(past, valid_from + 1),
                                     today + rng.integers(30, 400, n)))
        manager = self.c_manager[who]
        by_manager = (manager >= 0) & (rng.random(n) < 0.6)
        set_by = [self.format_id("manager", int(m) + 1) if b else _OVERRIDE_ADMINS[int(rng.integers(0, 4))]
                  for m, b in zip(manager.tolist(), by_manager.tolist(), strict=True)]
        if k == 0:  # set up to a week before it took effect
            updated = valid_from * DAY - TZ_OFFSET - rng.integers(HOUR, 7 * DAY, n)
        else:
            updated = _when(rng, np.full(n, self.ends[k - 1]), self.ends[k])
        return {"who": who, "tier": tier, "reason": reason, "valid_from": valid_from, "valid_to": valid_to,
                "set_by": set_by, "updated": updated}

    def write_overrides(self) -> None:
        for k in range(self.days):
            rows = self.override_data[k]
            order = np.argsort(rows["who"], kind="stable")
            sink = self.sinks[k]["crm_tier_overrides"]
            sink.write({
                "customer_id": sink.ids("customer", rows["who"][order] + 1),
                "tier": sink.pool(TIERS, rows["tier"][order]),
                "reason": sink.text([rows["reason"][i] for i in order.tolist()]),
                "valid_from": sink.date(rows["valid_from"][order]),
                "valid_to": sink.date(rows["valid_to"][order], null=rows["valid_to"][order] < 0),
                "set_by": sink.text([rows["set_by"][i] for i in order.tolist()]),
                "updated_at": sink.ts(rows["updated"][order]),
            })

    # -- broken rows ----------------------------------------------------------------------------

    def template_index(self, sink: _Sink, n: int, aux: dict | None) -> int:
        """A real row to copy a broken row from; for items, the last line of an order not used yet."""
        if sink.name != "sales_order_items":
            return int(sink.rng.integers(0, n))
        candidates = np.flatnonzero(aux["last"])
        # Random probes first: a full permutation per broken row is slow on a 250,000-row buffer.
        probes = candidates[sink.rng.integers(0, candidates.size, 32)].tolist()
        for i in probes + sink.rng.permutation(candidates).tolist():
            order = int(aux["order"][i])
            if order not in sink.used_orders:
                sink.used_orders.add(order)
                return i
        raise RuntimeError(f"{sink.path}: no order left to attach a broken item row to")

    def take(self, pool: list[int], what: str) -> int:
        if not pool:
            raise RuntimeError(f"ran out of reserved {what} ids for broken rows; raise the reserve")
        return pool.pop()

    def fresh_key(self, sink: _Sink, row: dict[str, str]) -> dict[str, str]:
        name = sink.name
        if name == "crm_customers":
            return {"customer_id": self.format_id("customer", self.take(self.c_reserved, "customer") + 1)}
        if name == "crm_account_managers":
            return {"manager_id": self.format_id("manager", self.take(self.m_reserved, "manager") + 1)}
        if name == "sales_products":
            return {"product_id": self.format_id("product", self.take(self.p_reserved, "product") + 1)}
        if name == "crm_tier_overrides":
            return {"customer_id": self.format_id("customer", self.take(self.override_spare, "customer") + 1)}
        if name == "sales_order_items":
            return {"line_no": str(int(row["line_no"]) + 1)}
        kind = _FRESH_ID[name]
        return {sink.entity.key[0]: self.format_id(kind, int(self.allocate(kind, 1)[0]))}

    def unknown_reference(self, sink: _Sink) -> tuple[str, str]:
        rng = sink.rng
        if sink.name == "sales_order_items" and rng.random() < 0.5:
            return "product_id", self.format_id("product", self.p_deleted[int(rng.integers(0, 2))] + 1)
        if sink.name in ("sales_order_items", "sales_refunds"):
            return "order_id", self.format_id("order", self.deleted_orders[int(rng.integers(0, len(self.deleted_orders)))])
        deleted = int(self.c_deleted[int(rng.integers(0, self.c_deleted.size))])
        return "customer_id", self.format_id("customer", deleted + 1)

    def broken_lines(self, sink: _Sink, kind: str, template: dict[str, str]) -> list[str]:
        """One broken row (two for a duplicate key) of the given kind, copied from a real row."""
        rng, name = sink.rng, sink.name
        row = dict(template)
        raw: set[str] = set()
        if kind != "missing_key":
            # A key no real row uses: quarantining the row then never orphans orders, items or refunds.
            row.update(self.fresh_key(sink, row))
        if kind == "bad_number":
            column, values = _BAD_NUMBER[name]
            row[column] = values[int(rng.integers(0, len(values)))]
        elif kind == "bad_timestamp":
            column = _BAD_TIMESTAMP[name]
            is_date = sink.entity.column(column).type == "date"
            values = _BAD_DATE_VALUES if is_date else _BAD_TIMESTAMP_VALUES
            row[column] = values[int(rng.integers(0, len(values)))].format(y=sink.extract_date.year)
        elif kind == "missing_key":
            row[sink.entity.key[0]] = ("", "NULL")[int(rng.integers(0, 2))]
        elif kind == "unknown_fk":
            column, value = self.unknown_reference(sink)
            row[column] = value
        elif kind == "negative_quantity":
            row["quantity"] = "-" + ("1", "2", "5")[int(rng.integers(0, 3))]
        elif kind == "future_order":
            row["order_ts"] = row["updated_at"] = sink.ts_text(sink.folder_end + int(rng.integers(DAY, 40 * DAY)))
        elif kind == "duplicate_key":
            column, values = _DUPLICATE_CHANGE[name]
            twin = dict(row)
            twin[column] = next(v for v in rng.permutation(values).tolist() if v != row[column].strip())
            return [self.render(sink, row), self.render(sink, twin)]
        elif kind == "field_count":
            if name == "crm_customers":
                row["customer_name"] += "," + ("先生", "女士", "Ltd.", "北京分公司")[int(rng.integers(0, 4))]
                raw.add("customer_name")
            elif name == "sales_orders":
                row["gross_amount"] = f"{rng.integers(1, 10)},{rng.integers(0, 1000):03d}.{rng.integers(0, 100):02d}"
                raw.add("gross_amount")
            else:
                return [self.render(sink, row, sink.columns[:-1])]
        return [self.render(sink, row, raw=raw)]

    @staticmethod
    def render(sink: _Sink, row: dict[str, str], columns=None, raw: frozenset[str] | set[str] = frozenset()) -> str:
        return ",".join(row[c] if c in raw else _csv(row[c]) for c in (columns or sink.columns))

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> GenerationSummary:
        started = time.perf_counter()
        steps = 3 + 4 * len(self.windows) + 2
        with tqdm(total=steps, desc="generating extracts", unit="step", file=sys.stderr,
                  disable=not self.progress) as bar:
            bar.set_postfix_str("reference data")
            self.build_pools()
            self.build_managers()
            self.build_products()
            bar.update()
            self.build_customers()
            self.build_overrides()
            self.out.mkdir(parents=True, exist_ok=True)
            self.sinks = [{e.name: _Sink(self, k, e) for e in contract.ENTITIES} for k in range(self.days)]
            bar.update()
            bar.set_postfix_str("CRM master data")
            self.write_managers()
            self.write_products()
            self.write_customers()
            self.write_overrides()
            bar.update()
            bar.set_postfix_str("orders")
            self.write_orders(bar)
            bar.set_postfix_str("interactions")
            self.write_interactions(bar)
            bar.set_postfix_str("tickets")
            self.write_tickets(bar)
            bar.set_postfix_str("surveys")
            self.write_surveys(bar)
            self.write_refunds()
            bar.update()
            bar.set_postfix_str("flushing")
            for folder in self.sinks:
                for sink in folder.values():
                    sink.close()
            self.write_sidecars()
            bar.update()
        rows = {self.dates[k].isoformat(): {s.entity.file_name: s.rows for s in self.sinks[k].values()}
                for k in range(self.days)}
        exported = self.c_real & (self.folder_of(self.c_created) < self.days)
        mix = np.bincount(self.persona[exported], minlength=len(PERSONAS))
        return GenerationSummary(
            out_dir=self.out, seed=self.seed, dirty=self.dirty,
            seconds=round(time.perf_counter() - started, 2), rows=rows, customers=int(exported.sum()),
            broken_rows=len(self.expected),
            bytes=sum(p.stat().st_size for p in self.out.rglob("*.csv")),
            personas={name: int(mix[i]) for i, name in enumerate(PERSONA_NAMES)},
        )

    def write_sidecars(self) -> None:
        exported = np.flatnonzero(self.c_real & (self.folder_of(self.c_created) < self.days))
        with (self.out / "_personas.csv").open("w", newline="", encoding="utf-8") as handle:
            handle.write("customer_id,persona\n")
            handle.writelines(f"{self.format_id('customer', i + 1)},{PERSONA_NAMES[self.persona[i]]}\n"
                              for i in exported.tolist())
        with (self.out / "_expected_quarantine.csv").open("w", newline="", encoding="utf-8") as handle:
            handle.write("extract_date,file,line_no,kind\n")
            handle.writelines(f"{d},{f},{n},{k}\n" for d, f, n, k in sorted(self.expected))


_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def generate(
    out_dir: Path,
    *,
    customers: int,
    days: int = 3,
    seed: int = 42,
    start_date: date = date(2026, 11, 1),
    history_days: int = 730,
    dirty: bool = True,
    progress: bool = True,
) -> GenerationSummary:
    """Write sample extracts for ``customers`` customers to ``out_dir``; same arguments, same bytes."""
    return _Generator(Path(out_dir), customers, days, seed, start_date, history_days, dirty, progress).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tierline_dev.generate",
        description="Write realistic sample CRM and sales extracts following EXTRACTS.md.",
    )
    parser.add_argument("--out", type=Path, required=True, help="landing folder to write <YYYY-MM-DD>/ folders into")
    parser.add_argument("--customers", type=int, required=True, help="customers in the full snapshot")
    parser.add_argument("--days", type=int, default=3, help="extract folders: the snapshot plus days-1 incremental")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start-date", type=date.fromisoformat, default=date(2026, 11, 1),
                        help="date of the full snapshot (YYYY-MM-DD)")
    parser.add_argument("--history-days", type=int, default=730, help="days of history in the snapshot")
    parser.add_argument("--clean", action="store_true", help="no dirty formats and no broken rows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, customers=args.customers, days=args.days, seed=args.seed,
                           start_date=args.start_date, history_days=args.history_days, dirty=not args.clean,
                           progress=not args.no_progress)
    except ValueError as exc:
        parser.error(str(exc))
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
