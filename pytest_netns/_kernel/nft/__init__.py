"""nftables over netlink, as data: expressions (``expr``), nft's words built from them (``statements``),
tables, chains and rules (``objects``), and atomic transactions (``batch``).

A rule is a list of expression values; a :class:`Table` value holds chains
holding rules; :func:`replace` or :func:`append` installs it in the calling
thread's namespace as one transaction and returns an :class:`NftTable`
handle.  The recipes (masquerade, service DNAT, published ports, ingress
loss) live in ``pytest_netns._net.rules``.
"""

from . import expr as expr
from . import statements as statements
from .batch import Batch as Batch
from .batch import NftError as NftError
from .batch import NftSocket as NftSocket
from .batch import NftTable as NftTable
from .batch import append as append
from .batch import chain_names as chain_names
from .batch import delete_table as delete_table
from .batch import exists as exists
from .batch import list_tables as list_tables
from .batch import operation as operation
from .batch import replace as replace
from .objects import HOOK_FORWARD as HOOK_FORWARD
from .objects import HOOK_INGRESS as HOOK_INGRESS
from .objects import HOOK_INPUT as HOOK_INPUT
from .objects import HOOK_OUTPUT as HOOK_OUTPUT
from .objects import HOOK_POSTROUTING as HOOK_POSTROUTING
from .objects import HOOK_PREROUTING as HOOK_PREROUTING
from .objects import NFT_TABLE_F_DORMANT as NFT_TABLE_F_DORMANT
from .objects import NFT_TABLE_F_OWNER as NFT_TABLE_F_OWNER
from .objects import PRIO_DSTNAT as PRIO_DSTNAT
from .objects import PRIO_FILTER as PRIO_FILTER
from .objects import PRIO_RAW as PRIO_RAW
from .objects import PRIO_SRCNAT as PRIO_SRCNAT
from .objects import TABLE_PREFIX as TABLE_PREFIX
from .objects import Chain as Chain
from .objects import Element as Element
from .objects import Rule as Rule
from .objects import Set as Set
from .objects import Table as Table
