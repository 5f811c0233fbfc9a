"""Evidence that two accounts are run together, as (id, kind, key, hits) rows: a node's
number, the kind of key, the key, how many of its exchanges carry it.

A node is an account, or, inside an account that carries many end users (a reseller, a
gateway), one end user's sub-stream of it: that is how a campaign hidden in mixed
traffic is separated from the customers beside it. A key is something two nodes can
share: a template band of their prompts; an exact system prompt; a network prefix with
the same client (people behind one office network use different clients, a farm's
scripts share theirs); a payment fingerprint; a sign-up burst; synchrony, after
SynchroTrap: one skeleton sent in the same hour. Sub-streams of one mixed account share
its network by construction, so the network never links them. Nothing here compares
pairs; the graph stage blocks on keys.
"""

from __future__ import annotations

PUBLIC_SHARE = 0.5  # a skeleton with this share of copied texts is public content
# Sign-ups through one channel in one hour are a burst from this many: two accounts of
# a campus made in the same hour are a coincidence (a student's account was linked to a
# farm's account that way, and flagged with its community), a farm's burst is dozens.
MIN_BURST = 3
MIXED_END_USERS = 20  # an account with this many end users is split by end user
SEPARATOR = "\x1f"  # between account and end user in a sub-stream's node name

NODES_SQL = f"""
CREATE OR REPLACE TEMP TABLE mixed AS
    SELECT account_id FROM exchanges GROUP BY account_id
    HAVING count(DISTINCT end_user_id) >= {MIXED_END_USERS};
CREATE OR REPLACE TEMP VIEW node_exchanges AS
    SELECT e.*, CASE WHEN m.account_id IS NOT NULL AND e.end_user_id IS NOT NULL
                     THEN e.account_id || chr(31) || e.end_user_id ELSE e.account_id END AS node
    FROM exchanges e LEFT JOIN mixed m USING (account_id);
CREATE OR REPLACE TEMP TABLE node_ids AS
    SELECT node, CAST(row_number() OVER (ORDER BY node) AS INTEGER) AS id,
           CAST(row_number() OVER (ORDER BY md5(node)) AS INTEGER) AS ring,
           CAST(dense_rank() OVER (ORDER BY split_part(node, chr(31), 1)) AS INTEGER)
               AS account
    FROM (SELECT DISTINCT node FROM node_exchanges UNION SELECT account_id FROM mixed);
"""

# Prompts that several nodes send word for word: public or commodity text (a greeting, a
# benchmark question) that links nobody, and a skeleton whose traffic is mostly such
# copies (a benchmark, a homework assignment) is public too. A campaign splits its pool,
# so its filled templates are each sent once; what links its accounts is the skeleton.
VERBATIM_SQL = """
CREATE OR REPLACE TEMP TABLE verbatim AS
    SELECT prompt_hash FROM node_exchanges
    WHERE prompt_hash IS NOT NULL GROUP BY 1 HAVING min(node) <> max(node);
"""

# Nodes are numbered (node_ids: id in name order; ring, a fixed pseudo-random order for
# the graph's rings; account, the number of the node's account; a mixed account's own
# name is numbered too, for its sign-up evidence and as its row in the findings, which
# list the nodes not named as sub-streams), and the later stages group and join
# on those integers rather than on names: evidence rows carry the node's number only
# (at 3M exchanges, 13M rows; leaving their names out took the graph stage from 8.4-9.8
# to 5.9-6.7 s). Band keys are counted per (node number, band): 21 rows per exchange.
# Only a band some copied prompt carries can be public, so the public ones are found
# among those few, and left out before the count (at 5.4M exchanges from 290k accounts,
# a window over the 68M (node, band) counts took 17 s of the stage's 30).
PUBLIC_BANDS_SQL = """
CREATE OR REPLACE TEMP TABLE public_bands AS
    WITH copied AS (
        SELECT DISTINCT unnest(x.template_bands) AS band
        FROM node_exchanges x JOIN verbatim v ON x.prompt_hash = v.prompt_hash
    )
    SELECT band FROM (
        SELECT unnest(x.template_bands) AS band, v.prompt_hash AS copied
        FROM node_exchanges x LEFT JOIN verbatim v ON x.prompt_hash = v.prompt_hash)
    WHERE band IN (SELECT band FROM copied)
    GROUP BY band HAVING count(copied) / count(*) >= {PUBLIC_SHARE};
"""
EVIDENCE_SQL = """
SELECT id, 'template' AS kind, 'tb:' || lower(hex(band)) AS key, hits - copied AS hits
FROM (SELECT id, band, count(*) AS hits, count(copied) AS copied
      FROM (SELECT n.id, unnest(x.template_bands) AS band, v.prompt_hash AS copied
            FROM node_exchanges x JOIN node_ids n ON x.node = n.node
            LEFT JOIN verbatim v ON x.prompt_hash = v.prompt_hash)
      WHERE band <> 0 AND band NOT IN (SELECT band FROM public_bands) GROUP BY 1, 2)
WHERE hits > copied
UNION ALL
SELECT n.id, 'synchrony', 'sync:' || lower(hex(x.template_bands[1])) || ':'
       || CAST(date_trunc('hour', x.ts) AS VARCHAR), count(*)
FROM node_exchanges x JOIN node_ids n ON x.node = n.node
     ANTI JOIN verbatim v ON x.prompt_hash = v.prompt_hash
WHERE x.template_bands[1] <> 0 GROUP BY n.id, 3
UNION ALL
SELECT n.id, 'system_prompt', 'sp:' || system_hash, count(*)
FROM node_exchanges x JOIN node_ids n ON x.node = n.node
WHERE system_hash IS NOT NULL GROUP BY n.id, 3
UNION ALL
SELECT n.id, 'network', 'ip:' || ip_prefix || '|' || coalesce(user_agent, ''), count(*)
FROM node_exchanges x JOIN node_ids n ON x.node = n.node
WHERE ip_prefix IS NOT NULL AND NOT contains(x.node, chr(31))
GROUP BY n.id, 3
"""

ACCOUNT_EVIDENCE_SQL = """
UNION ALL
SELECT n.id, 'payment', 'pay:' || a.payment_fingerprint, 1
FROM accounts a JOIN node_ids n ON a.account_id = n.node  -- accounts with traffic
WHERE a.payment_fingerprint IS NOT NULL
UNION ALL
SELECT n.id, 'signup_burst', s.key, 1 FROM (
    SELECT account_id, key, count(*) OVER (PARTITION BY key) AS signups FROM (
        SELECT DISTINCT account_id, 'burst:' || coalesce(signup_channel, '?') || ':'
               || CAST(date_trunc('hour', created_at) AS VARCHAR) AS key
        FROM accounts WHERE created_at IS NOT NULL)) s
JOIN node_ids n ON s.account_id = n.node  -- sign-ups counted whether or not they sent traffic
WHERE s.signups >= {MIN_BURST}
"""


def evidence_sql(with_accounts: bool) -> str:
    """The statements that leave the `evidence` table, (id, kind, key, hits) rows, after
    NODES_SQL (and the `accounts` view, `with_accounts`)."""
    query = EVIDENCE_SQL + (ACCOUNT_EVIDENCE_SQL if with_accounts else "")
    sql = VERBATIM_SQL + PUBLIC_BANDS_SQL + f"CREATE OR REPLACE TEMP TABLE evidence AS {query};"
    return sql.replace("{PUBLIC_SHARE}", str(PUBLIC_SHARE)).replace("{MIN_BURST}", str(MIN_BURST))
