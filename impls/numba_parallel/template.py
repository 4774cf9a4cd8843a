"""The product microkernels' source, written out from one template for any register tile.

A tile of `rows` rows by `columns` columns (a few vector registers wide) is held in
rows x columns scalars while the loop runs over the reduction dimension; LLVM's SLP
vectoriser turns each row's columns into vector FMAs. The scalars go round the loop as one
tuple, `acc`, unpacked at the top of each step and rebuilt at its end: Numba rebuilds SSA
form for every variable assigned more than once, at a cost of the variables times the
statements, so rows x columns loop-carried scalars made the compile quadratic in the tile
(an 8 x 32 tile took twice as long); LLVM splits the tuple back into the same registers.

Rows x vectors per row accumulators, plus the rows' broadcasts and a load, must fit the
register file: see the tile table in the package's __init__. kernels.microkernel compiles
what this writes; kernels.DIGEST (of this file too) is part of every kernel's signature, so
Numba's disk cache never serves a kernel built from an older template.
"""

from __future__ import annotations

import re

_TEMPLATES = {
    "scores": """
def scores(q, k_strips, n_strips, s):
    \"\"\"s[:, :n_strips * {columns}] = q @ (k_strips[0] | k_strips[1] | ...).\"\"\"
    _wide_vectors()
    zero = q.dtype.type(0)
    for strip in range(n_strips):
        k_strip = k_strips[strip]
        for r in range(0, q.shape[0], {rows}):
            {each_row: q{i} = q[r + {i}]}
            start = ([[zero]],)
            acc = start
            for kk in range(k_strip.shape[0]):
                k = k_strip[kk]
                {each_column: k{j} = k[{j}]}
                [[a{i}_{j}]], = acc
                {each_row: x{i} = q{i}[kk]}
                step = ([[a{i}_{j} + x{i} * k{j}]],)
                acc = step
            [[t{i}_{j}]], = acc
            col = strip * {columns}
            {each_row: s{i} = s[r + {i}, col:]; <s{i}[{j}] = t{i}_{j}>}
""",
    "accumulate": """
def accumulate(p, n_cols, v_strips, out, rescale):
    \"\"\"out = rescale[:, None] * out + p[:, :n_cols] @ v_strips[:, :n_cols].\"\"\"
    _wide_vectors()
    for strip in range(v_strips.shape[0]):
        v_strip = v_strips[strip]
        for r in range(0, p.shape[0], {rows}):
            col = strip * {columns}
            {each_row: p{i} = p[r + {i}]; o{i} = out[r + {i}, col:]; w{i} = rescale[r + {i}]}
            start = ([[o{i}[{j}] * w{i}]],)
            acc = start
            for c in range(n_cols):
                v = v_strip[c]
                {each_column: v{j} = v[{j}]}
                [[a{i}_{j}]], = acc
                {each_row: x{i} = p{i}[c]}
                step = ([[a{i}_{j} + x{i} * v{j}]],)
                acc = step
            [[t{i}_{j}]], = acc
            {each_row: <o{i}[{j}] = t{i}_{j}>}
""",
    # Decode reads k and v in place (row-major, one key per row): a score is a dot product
    # along d (dots.py: the rows x keys of a step at once, reduced together); p @ v reads the
    # values' columns straight from each key's row. Each asks for its own rows `ahead` on as
    # it reads, so that the memory has requests in flight all through the tile.
    "decode_scores": """
def decode_scores(q, r, keys, first_key, n_keys, s, ahead):
    \"\"\"s[r:r + {rows}, :n_keys] = q[r:r + {rows}] @ keys[first_key:][:n_keys].T, {columns}
    keys at a time (n_keys a multiple of {columns}); with ahead > 0, the keys that many rows
    further on are asked for as it goes.\"\"\"
    _wide_vectors()
    for key in range(0, n_keys, {columns}):
        _dot_products(q, r, keys, first_key + key, s, key, ahead)
""",
    "decode_accumulate": """
def decode_accumulate(p, r, n_keys, values, first_key, out, rescale, ahead):
    \"\"\"out[r:r + {rows}, :] = rescale * out + p[r:r + {rows}, :n_keys] @ values[first_key:]
    [:n_keys], over the columns in whole strips of {columns}; the rest is the caller's. With
    ahead > 0, the same columns of the values that many rows on are asked for as it goes.\"\"\"
    _wide_vectors()
    {each_row: p{i} = p[r + {i}]; w{i} = rescale[r + {i}]}
    for col in range(0, out.shape[1] - {columns} + 1, {columns}):
        {each_row: o{i} = out[r + {i}, col:]}
        start = ([[o{i}[{j}] * w{i}]],)
        acc = start
        # The keys' rows as one view: indexed from 0 by the loop, a row needs no check for a
        # negative index (values[first_key + c] did, at every key).
        rows = values[first_key : first_key + n_keys]
        for c in range(n_keys):
            if ahead > 0:
                _prefetch_columns(values, first_key + c + ahead, col)
            v = rows[c, col:]
            {each_column: v{j} = v[{j}]}
            [[a{i}_{j}]], = acc
            {each_row: x{i} = p{i}[c]}
            step = ([[a{i}_{j} + x{i} * v{j}]],)
            acc = step
        [[t{i}_{j}]], = acc
        {each_row: <o{i}[{j}] = t{i}_{j}>}
""",
}


def microkernel_source(kind: str, rows: int, columns: int) -> str:
    """The Python source of one microkernel (a key of _TEMPLATES) for one tile shape.

    In the template, `{each_row: A; <B>}` becomes, for every row i, the statement A and then
    B for every column j, each on its own line at the placeholder's indentation;
    `{each_column: A}` becomes A for every column j; `[[A]]` becomes A for every row i and
    column j, separated by commas (a tuple's items).
    """

    def expand(match: re.Match) -> str:
        indent, body = match.group(1), match.group(2)
        lines = []
        for i in range(rows):
            for part in body.split("; "):
                if part.startswith("<"):
                    lines += [part[1:-1].format(i=i, j=j) for j in range(columns)]
                else:
                    lines.append(part.format(i=i))
        return "\n".join(indent + line for line in lines)

    def expand_columns(match: re.Match) -> str:
        indent, body = match.group(1), match.group(2)
        return "\n".join(indent + body.format(j=j) for j in range(columns))

    def every(match: re.Match) -> str:
        cells = [match.group(1).format(i=i, j=j) for i in range(rows) for j in range(columns)]
        return ", ".join(cells)

    text = _TEMPLATES[kind].replace("{rows}", str(rows)).replace("{columns}", str(columns))

    text = re.sub(r"\[\[(.*?)\]\](?!\])", every, text)
    text = re.sub(r"^( *)\{each_row: (.*)\}$", expand, text, flags=re.MULTILINE)
    text = re.sub(r"^( *)\{each_column: (.*)\}$", expand_columns, text, flags=re.MULTILINE)
    return text.strip() + "\n"
