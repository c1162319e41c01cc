"""Evaluation protocols: which images are compared with which.

Readers
- `read_seed_verification`: the seed's c-RMFRD pairs (`Input,Target,Label`: masked image, unmasked
  image, 1 same person / 0 not), GBK or UTF-8.
- `read_seed_list`: a seed identification list (one image key per line; identity = its folder).
  The seed's own lists put one *masked* image per identity in the gallery and unmasked probes
  (`AFDB_gallery_fianl.csv`, `AFDB_probe_final.csv`); `probe_is_mask/` does the reverse.
- `read_lfw_pairs`: LFW View 2 `pairs.txt` (10 folds of 300 matched then 300 mismatched pairs).
- `scan_dataset`: a folder-per-identity listing, masked/unmasked from a manifest column or a
  file-name rule.
Generators
- `masked_vs_unmasked_pairs`: every masked x unmasked pair, or a seeded sample of impostors.
- `identification_split`: masked probes against an unmasked gallery (single images or templates).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from maskgen.checks import is_whole, read_flag
from maskgen.seed import read_text

_SEED_UNMASKED = re.compile(r"^\d+_\d+_.+_\d{4}(\.\w+)?$")


def check_masked_rule(masked_rule: str) -> str:
    """`seed` or a regular expression, refused before any work (a worker raised re.error per batch)."""
    if masked_rule == "seed":
        return masked_rule
    if not isinstance(masked_rule, str):
        raise ValueError(f"the masked rule is 'seed' or a regular expression, got {masked_rule!r}")
    try:
        re.compile(masked_rule)
    except re.error as exc:
        raise ValueError(f"masked rule '{masked_rule}' is not a regular expression: {exc}") from None
    return masked_rule


def masked_flags(keys, masked_rule: str = "seed") -> np.ndarray:
    """Masked or not, by file name: the seed's naming (`seed`, `seed_is_masked`) or a regular expression
    masked names match (searched in the file name, not its folders)."""
    if masked_rule == "seed":
        return np.array([seed_is_masked(k) for k in keys], dtype=bool)
    pattern = _pattern(masked_rule)
    return np.array([bool(pattern.search(PurePosixPath(str(k)).name)) for k in keys], dtype=bool)


def _pattern(masked_rule) -> re.Pattern:
    """A masked rule's regular expression: compiled already, or its text checked (`check_masked_rule`)."""
    return masked_rule if isinstance(masked_rule, re.Pattern) else re.compile(check_masked_rule(masked_rule))


def seed_is_masked(key: str) -> bool:
    """The seed's naming: unmasked images are `<A>_<B>_<person>_<4 digits>.<ext>` (A_B the face type,
    e.g. `baijingting/0_0_baijingting_0001.jpg`); every other name (`0_0_9.jpg`,
    `0_0_批注 2020-02-23 132414.png`) is a masked image. The person part is not compared with the
    folder, since the seed's lists misspell it at times (`songxiaobo/1_0_songxiaobao_0048.jpg`)."""
    return _SEED_UNMASKED.match(PurePosixPath(str(key).replace("\\", "/")).name) is None


@dataclass
class Pairs:
    """Verification pairs: keys of the two images, 1 genuine / 0 impostor, optional fold per pair."""

    a: list[str]
    b: list[str]
    labels: np.ndarray
    folds: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        labels = np.asarray(self.labels).reshape(-1)
        wrong = labels[~np.isin(labels, (0, 1))].tolist() if labels.dtype.kind in "biuf" else \
            [v for v in labels.tolist() if isinstance(v, str) or v not in (0, 1)]  # an object column's values
        if wrong:  # (2 was kept as 2, and 0.7 cut to 0: an impostor pair)
            raise ValueError(f"pair labels are 1 (genuine) or 0 (impostor), got {wrong[0]!r}")
        self.labels = labels.astype(np.int8)
        if not (len(self.a) == len(self.b) == len(self.labels)):
            raise ValueError("pairs need as many second images and labels as first images")

    def __len__(self) -> int:
        return len(self.a)

    @property
    def keys(self) -> list[str]:
        """Every image the protocol needs, once, in first-seen order."""
        return list(dict.fromkeys(self.a + self.b))

    def distinct(self, source: str = "") -> "Pairs":
        """The pairs, each once: a pair given again (either way round) with the same label is dropped
        with a warning; one given with both labels, or an image paired with itself (always a match:
        it raised TAR and AUC), is refused naming both. `source` names the file in messages."""
        seen, keep = {}, []
        for i, (a, b, label) in enumerate(zip(self.a, self.b, self.labels.tolist())):
            where = f"{source}: pair {i + 1}" if source else f"pair {i + 1}"
            if a == b:
                raise ValueError(f"{where} pairs {a!r} with itself: an image always matches itself, so the pair "
                                 "measures nothing")
            pair = (a, b) if a <= b else (b, a)
            if pair in seen:
                if seen[pair][1] != label:
                    raise ValueError(f"{where} ({a!r}, {b!r}) is pair {seen[pair][0] + 1} again with the other "
                                     "label: one pair cannot be genuine and impostor")
                continue
            seen[pair] = (i, label)
            keep.append(i)
        if len(keep) == len(self):
            return self
        warnings.warn(f"{source or 'the protocol'}: {len(self) - len(keep)} pair(s) given again were counted once",
                      stacklevel=2)
        return Pairs([self.a[i] for i in keep], [self.b[i] for i in keep], self.labels[keep],
                     None if self.folds is None else self.folds[keep], self.name)


@dataclass
class Item:
    key: str
    identity: str
    masked: bool


@dataclass
class Dataset:
    items: list[Item] = field(default_factory=list)

    @property
    def masked(self) -> list[Item]:
        return [i for i in self.items if i.masked]

    @property
    def unmasked(self) -> list[Item]:
        return [i for i in self.items if not i.masked]


def identity_of(key: str) -> str:
    """The folder that holds the image (folder-per-identity datasets)."""
    parts = PurePosixPath(str(key).replace("\\", "/")).parts
    if len(parts) < 2:
        raise ValueError(f"{key!r} has no identity folder (expected identity/image)")
    return parts[-2]


def read_seed_verification(path: Path) -> Pairs:
    rows = list(csv.reader(io.StringIO(read_text(path))))
    if not rows or [c.strip() for c in rows[0][:3]] != ["Input", "Target", "Label"]:
        raise ValueError(f"{path}: expected the header Input,Target,Label")
    a, b, labels = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3 or row[2].strip() not in ("0", "1"):
            raise ValueError(f"{path} line {line}: expected masked,unmasked,0|1, got {row}")
        a.append(row[0].strip())
        b.append(row[1].strip())
        labels.append(int(row[2]))
    return Pairs(a, b, np.array(labels), name=Path(path).stem)


def read_seed_list(path: Path, strict: bool = False) -> list[str]:
    """Image keys, one per line. A line without an identity folder (the seed's own
    `probe_is_mask/AFDB_gallery_no_mask.csv` has `duhaitao0_0_duhaitao_0029.jpg`) is skipped with a
    warning naming it, or refused with `strict=True`."""
    keys, skipped = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        key = line.strip().split(",")[0].strip()
        if not key:
            continue
        try:
            identity_of(key)
        except ValueError as exc:
            if strict:
                raise ValueError(f"{path} line {number}: {exc}") from None
            skipped.append(f"line {number}: {exc}")
            continue
        keys.append(key)
    if skipped:  # one warning per file, however many lines: a wrong file would print thousands
        warnings.warn(f"{path}: {len(skipped)} line(s) skipped, e.g. {skipped[0]}", stacklevel=2)
    return keys


def read_lfw_pairs(path: Path) -> Pairs:
    """LFW View 2 (`pairs.txt`): `folds n`, then per fold n matched (`name i j`) and n mismatched
    (`a i b j`) lines; or View 1 (`pairsDevTrain.txt`, `pairsDevTest.txt`): `n`, then n matched and
    n mismatched lines, one set without folds. Errors name the file's line (blank lines counted)."""
    lines = [(number, ln.split()) for number, ln in enumerate(read_text(path).splitlines(), start=1) if ln.strip()]
    head = lines[0][1] if lines else []
    if len(head) not in (1, 2) or not all(v.isdigit() for v in head):
        raise ValueError(f"{path}: first line must be '<folds> <pairs per class per fold>' (View 2) or "
                         "'<pairs per class>' (View 1)")
    n_folds, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    body = lines[1:]
    if len(body) != n_folds * 2 * per:
        raise ValueError(f"{path}: expected {n_folds * 2 * per} pair lines, found {len(body)}")

    def key(name, number, line):
        if not number.isdigit():
            raise ValueError(f"{path} line {line}: {number!r} is not an image number (a name with a space is "
                             "not LFW's: LFW writes it with underscores)")
        return f"{name}/{name}_{int(number):04d}.jpg"

    a, b, labels, folds = [], [], [], []
    for i, (line, row) in enumerate(body):
        if len(row) == 3:
            a.append(key(row[0], row[1], line))
            b.append(key(row[0], row[2], line))
            labels.append(1)
        elif len(row) == 4:
            if row[0] == row[2]:  # a 4-field line is a mismatched pair: one person on both sides is a slip
                raise ValueError(f"{path} line {line}: a mismatched pair (4 fields) names one person twice "
                                 f"({row[0]}); a pair of one person is written `name i j`")
            a.append(key(row[0], row[1], line))
            b.append(key(row[2], row[3], line))
            labels.append(0)
        else:
            raise ValueError(f"{path} line {line}: expected 3 or 4 fields, got {row}")
        folds.append(i // (2 * per))
    if len(head) == 1:
        return Pairs(a, b, np.array(labels), None, name="lfw-view1")
    return Pairs(a, b, np.array(labels), np.array(folds), name="lfw-view2")


# not words such as "same" or "genuine": those are what a header calls the label column
PAIR_LABELS = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0}


def read_plain_pairs(path: Path) -> Pairs:
    """A plain CSV of `a,b,label` (label 1, true or yes for a genuine pair; 0, false or no for an
    impostor pair; any case; GBK or UTF-8). The first line is a header when
    its label is none of those and its first two fields are not image file names: a first pair with
    a mistyped label is refused, not dropped as a header. Errors name the file's line."""
    from maskgen.decode import is_image_name

    reader = csv.reader(io.StringIO(read_text(path)))
    a, b, labels = [], [], []
    first = True
    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        label = PAIR_LABELS.get(row[2].strip().lower()) if len(row) >= 3 else None
        if first and label is None and len(row) >= 3 and not any(is_image_name(c.strip()) for c in row[:2]):
            if {"path", "identity"} & {c.strip().lower() for c in row}:  # pairs of (image, identity) otherwise
                raise ValueError(f"{path}: its header ({','.join(c.strip() for c in row)}) is an input manifest's, "
                                 "not a pairs file's (a,b,label): give a manifest as the input, not as a protocol")
            first = False
            continue  # a header
        first = False
        if label is None:
            raise ValueError(f"{path} line {reader.line_num}: expected a,b,label (label 1/0, true/false, yes/no), "
                             f"got {row}")
        a.append(row[0].strip())
        b.append(row[1].strip())
        labels.append(label)
    if not a:
        raise ValueError(f"{path}: no pairs")
    return Pairs(a, b, np.array(labels), name=Path(path).stem)


def read_pairs_file(path: Path) -> Pairs:
    """Any pairs protocol, by its shape: LFW's View 2 `pairs.txt` (first line `<folds> <n>`) or View 1
    (`<n>`), the seed's c-RMFRD CSV (header `Input,Target,Label`), or a plain `a,b,label` CSV."""
    text = read_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if re.fullmatch(r"\s*\d+(\s+\d+)?\s*", first):
        return read_lfw_pairs(path)
    if [c.strip() for c in first.split(",")[:3]] == ["Input", "Target", "Label"]:
        return read_seed_verification(path)
    return read_plain_pairs(path)


def scan_dataset(keys, masked_column=None, masked_rule="seed") -> Dataset:
    """Folder-per-identity items. Masked status: `masked_column` (a value per key, e.g. from a manifest)
    wins; otherwise `masked_rule`: `"seed"` (the seed's naming, `seed_is_masked`), a regular expression
    that masked file names match, or a function of the key."""
    keys = list(keys)
    if masked_column is not None:
        flags = [read_masked_flag(v) for v in masked_column]
        if len(flags) != len(keys):
            raise ValueError("one masked flag per key is needed")
    elif masked_rule == "seed":
        flags = [seed_is_masked(k) for k in keys]
    elif callable(masked_rule):
        flags = [bool(masked_rule(k)) for k in keys]
    elif masked_rule is not None:
        pattern = _pattern(masked_rule)
        flags = [bool(pattern.search(PurePosixPath(k).name)) for k in keys]
    else:
        raise ValueError("give masked_column or masked_rule to tell masked from unmasked images")
    return Dataset([Item(k, identity_of(k), f) for k, f in zip(keys, flags)])


def read_masked_flag(value) -> bool:
    """A manifest's masked flag: booleans, 1 and 0, or yes/no words ("masked", "true", "0", ...):
    `maskgen.checks.read_flag`, which `FaceRecord.from_row` reads its `masked` with too."""
    return read_flag(value, "a masked flag")


def masked_vs_unmasked_pairs(dataset: Dataset, impostors_per_probe: int | None = None, seed: int = 0) -> Pairs:
    """Masked probe x unmasked image pairs: all of them, or every genuine pair plus
    `impostors_per_probe` impostors per masked image drawn with `seed`."""
    if impostors_per_probe is not None and not (is_whole(impostors_per_probe) and impostors_per_probe >= 1):
        raise ValueError(f"impostors_per_probe is a whole number of at least 1 (or None: every impostor pair), "
                         f"got {impostors_per_probe!r}")
    if not (is_whole(seed) and seed >= 0):
        raise ValueError(f"seed is a whole number of at least 0, got {seed!r}")
    masked, unmasked = dataset.masked, dataset.unmasked
    if not masked or not unmasked:
        raise ValueError("need masked and unmasked images")
    rng = np.random.default_rng(seed)
    u_ids = np.array([u.identity for u in unmasked])
    a, b, labels = [], [], []
    for m in masked:
        genuine = np.nonzero(u_ids == m.identity)[0]
        impostor = np.nonzero(u_ids != m.identity)[0]
        if impostors_per_probe is not None and len(impostor) > impostors_per_probe:
            impostor = np.sort(rng.choice(impostor, impostors_per_probe, replace=False))
        for j in genuine:
            a.append(m.key), b.append(unmasked[j].key), labels.append(1)
        for j in impostor:
            a.append(m.key), b.append(unmasked[j].key), labels.append(0)
    return Pairs(a, b, np.array(labels), name="masked-vs-unmasked")


@dataclass
class IdentificationSplit:
    probes: list[Item]
    gallery: list[Item]


def identification_split(dataset: Dataset, probe_masked: bool = True) -> IdentificationSplit:
    """Masked probes against the unmasked gallery (or the reverse with probe_masked=False)."""
    probes = dataset.masked if probe_masked else dataset.unmasked
    gallery = dataset.unmasked if probe_masked else dataset.masked
    if not probes or not gallery:
        raise ValueError("need masked and unmasked images")
    return IdentificationSplit(probes, gallery)
