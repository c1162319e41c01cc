"""What an output was made with: `_mfr_settings.json` under it, written by the job that starts it.

A rerun skips every input that already has rows, so a rerun asking for other masks (another style,
seed, face policy, crop size, ...) would silently finish the output with the new masks beside the
old ones and report them as one run. Each job that writes masks records the settings that decide
them when it starts an output, and a later job on that output must ask the same, or is refused
before any work with what differs. An output of a version that kept no record is an `mfr embed`
output (`shards/` alone, `jobs.inputs.refuse_foreign_output`), whose settings its next run records.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager

SETTINGS_KEY = "_mfr_settings.json"                  # masks: mfr mask, mfr run
SETTINGS_KEYS = {"masks": SETTINGS_KEY, "embeddings": "_mfr_embed_settings.json"}  # apart: one folder may hold both


# settings first recorded after outputs were made without them: such an output's rerun is not refused
# for them (what it was made with is not known)
RECORDED_SINCE = frozenset({"input", "manifest_encoding", "style_options"})


# settings of one kind of row that an output may or may not hold (the mask `masked-gallery` rows draw):
# recorded with the rest by the run that makes the output, and compared only between runs that both
# give them (a plain run beside them is not refused for them). Never added to a record made without
# them: which mask an output's earlier rows drew is not known then (an older version's, a plain run's
# output), and a run that stopped before drawing any would have fixed it for good
MODE_SETTINGS = frozenset({"masked_gallery_style", "masked_gallery_seed"})


class SettingsChanged(ValueError):
    """A rerun asks for other settings than the output was made with."""


def input_settings(input_uri, manifest_encoding: str | None) -> dict:
    """How the input is read, where it decides which inputs a rerun finds done: a CSV manifest's text
    encoding (`jobs.inputs.manifest_encoding`; "auto" when not given). Its paths are the rows' keys:
    read in another encoding they name other files, and the rows listed under the first reading (all
    `missing`, for a cp1252 file read as GBK) would stay in the output beside the new ones."""
    from jobs.inputs import _is_parquet, is_manifest

    if not is_manifest(str(input_uri)) or _is_parquet(str(input_uri)):
        return {}
    label = {None: "auto", "utf-8-sig": "utf-8"}.get(manifest_encoding, manifest_encoding)
    return {"manifest_encoding": label}


def finder_settings(finder) -> dict:
    """A `maskgen.finder.FinderOptions` as recorded settings. `turned` (added later, off by default)
    is recorded only when on: an output made before it, whose record has no `turned`, reruns as it
    was, and one made with it refuses a rerun without it."""
    settings = dataclasses.asdict(finder)
    if not settings.get("turned"):
        settings.pop("turned", None)
    return settings


def augment_settings(options, input_uri=None, manifest_encoding: str | None = None) -> dict:
    """The settings of `maskgen.augment.AugmentOptions` that decide what is written, as plain JSON
    values (a style by its name, and by what it draws: `maskgen.masks.style_options`), and with
    `input_uri` how the input is read
    (`input_settings`)."""
    from maskgen.masks import style_options

    settings = dataclasses.asdict(dataclasses.replace(options, style="seed"))  # a style object need not be one
    settings["finder"] = finder_settings(options.finder)
    if options.worn_masks is None:  # added later, off by default: recorded only when on, as `turned`
        settings.pop("worn_masks")
    settings["style"] = getattr(options.style, "name", str(options.style))
    # a style object's options too: by its name alone, OneOf([ClothMask()]) then OneOf([SurgicalMask()])
    # mixed two kinds of masks in one output, and so did SurgicalMask(colours=("pink",)) then "surgical"
    settings["style_options"] = style_options(options.style)
    if input_uri is not None:
        settings.update(input_settings(input_uri, manifest_encoding))
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def read_record(store, made: str = "masks") -> dict | None:
    """The settings record under `store` (`{"command", "settings", "source"}`), None when there is
    none; SettingsChanged when it is damaged (changed by hand, or cut short by a crash of the machine:
    it is written whole, by a rename, but not synced): recording this run's settings over it mixed
    two runs' masks in one output without a word."""
    key = SETTINGS_KEYS[made]
    if not store.exists(key):
        return None
    try:
        record = json.loads(store.read(key))
        if not isinstance(record, dict) or not isinstance(record["settings"], dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SettingsChanged(f"{store.uri_of(key)} is damaged (not the settings record mfr writes): what the output "
                              "was made with is unknown, so a rerun cannot be checked against it. Restore it from a "
                              "copy, or write to another output") from None
    return record


# the commands whose masks records an output may hold, and what each writes there
MASK_COMMANDS = {"mfr mask": "images/, crops/ and manifest/", "mfr run": "masked/, embeddings/ and report/"}


def refuse_other_output(output, made: str, command: str) -> None:
    """An output whose record says the other kind of job made it (`made`: that record, `masks` of
    `mfr mask` and `mfr run`, `embeddings` of `mfr embed`) is no place for `command`'s folders: embed's
    shards/ beside a mask output's images/, or mask's images/ beside an embed output's shards/ (which
    then refused `mfr embed` itself, as a mask output)."""
    from jobs.storage import redact

    key = SETTINGS_KEYS[made]
    # an embed output of a version that kept no record is its shards/ alone (as refuse_foreign_output
    # takes it for mfr's)
    bare = made == "embeddings" and not output.exists(SETTINGS_KEY) and output.top_level() == ["shards"]
    if bare or output.exists(key):
        by = "mfr mask or mfr run" if made == "masks" else "mfr embed"
        holds = "its shards/ alone" if bare else key
        raise ValueError(f"the output {redact(output.uri)} is an output of {by} (it holds {holds}): give {command} "
                         "a folder of its own; nothing was written")


def check_settings(store, command: str, settings: dict, made: str = "masks", record: bool = True,
                   follows: dict | None = None, source: str | None = None) -> bool:
    """Record `settings` under `store` (an output) when it has none, else refuse with SettingsChanged
    when they differ from the recorded ones (`made`: what the settings decide, `masks` or
    `embeddings`, each recorded in a file of its own), or when another command made the output's masks
    (`mfr run` into an `mfr mask` output, or the other way). True when this call recorded them. With
    `record=False` (a dry run) it only refuses, as the run would. `follows` names the setting each
    derived one follows from (`embed`'s finder fields follow `masked` unless given), or the option
    given ("--input-kind photos"): a refusal asks for what a user gives, and says which of the
    others come with it. `source`: the input, as
    shown to people (`jobs.storage.redact`), recorded beside the settings (`source_note`)."""
    key = SETTINGS_KEYS[made]
    found = read_record(store, made)
    by = (found or {}).get("command")
    # another command's output, even one its first run left unfinished (its images written, no rows)
    if made == "masks" and by in MASK_COMMANDS and command in MASK_COMMANDS and by != command:
        raise SettingsChanged(f"{store.uri} was made by {by}, which writes {MASK_COMMANDS[by]} there; {command} "
                              f"writes {MASK_COMMANDS[command]} and tracks what is done apart, so the two would "
                              f"mix in one output: run {by} on it, or give {command} another output")
    if found is not None and found.get("binding") is not False:  # (not binding: `settings_recorded`)
        recorded = found["settings"]
        recorded, settings = _flat(recorded), _flat(settings)  # a refusal names the field that differs
        def top(key: str) -> str:  # a nested setting's field (`style_options.colours`) is its setting's
            return key.split(".", 1)[0]

        tops = {top(k) for k in recorded}
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k)
                         and not (top(k) in RECORDED_SINCE and top(k) not in tops)
                         and not (k in MODE_SETTINGS and (k not in recorded or k not in settings)))
        if "style" in changed:  # another style: its options differ with it, and are not what to say
            changed = [k for k in changed if not k.startswith("style_options.")]
        if changed == ["manifest_encoding"]:
            was, now = ({"auto": "auto (UTF-8, else GBK)"}.get(v, v) for v in
                        (recorded["manifest_encoding"], settings["manifest_encoding"]))
            raise SettingsChanged(f"{store.uri} was listed from the manifest read as {was} "
                                  f"(--manifest-encoding); this run reads it as {now}. Its paths name the files, "
                                  "so the rows of the first reading would stay beside this run's: write to "
                                  "another output, or read it as before")
        if changed:
            follows = follows or {}
            options = [o for o in dict.fromkeys(follows.get(k) for k in changed) if o and o.startswith("--")]
            derived = [k for k in changed if follows.get(k) in changed or follows.get(k) in options]
            given = [k for k in changed if k not in derived]
            was = ", ".join(f"{k}={_shown(recorded.get(k))}" for k in given) or \
                "another " + ", ".join(o.split()[0] for o in options)  # ("another --input-kind")
            now = ", ".join([f"{k}={_shown(settings.get(k))}" for k in given] + options)
            if derived:  # no option of the user's sets them: they come with what was asked
                now += (f" (which brings {', '.join(f'{k}={settings.get(k)!r}' for k in derived)}; the output "
                        f"has {', '.join(f'{k}={recorded.get(k)!r}' for k in derived)})")
            if changed == ["input"]:  # the kind of input alone
                raise SettingsChanged(f"{store.uri} was made from a {recorded['input']} input; this run gives a "
                                      f"{settings['input']}. The two are tracked apart, so the same images given "
                                      "the other way would be embedded and scored twice: give the input the "
                                      "same way, or write to another output")
            raise SettingsChanged(f"{store.uri} was made with {was}; this run asks {now}. A rerun skips what is "
                                  f"done, so its {made} would not match the earlier ones: run it with the same "
                                  "settings, or write to another output")
        return False
    if not record:
        return False
    store.write(key, json.dumps({"command": command, "settings": settings,
                                 **({"source": source} if source is not None else {})}, indent=1,
                                sort_keys=True).encode())
    return True


def source_of(input_uri, images_uri=None) -> str:
    """An input as its record names it: a folder's or an input manifest's absolute path or URI, without
    credentials; a manifest's with the images' folder when `images_uri` (--images) gives it (a copy
    of the images elsewhere is another input)."""
    from jobs.inputs import is_manifest
    from jobs.storage import open_parent, open_store, redact

    if is_manifest(str(input_uri)):
        store, name = open_parent(input_uri)
        images = open_store(images_uri).uri if images_uri is not None else store.uri
        return redact(store.uri_of(name)) + (f" (images: {redact(images)})" if images != store.uri else "")
    return redact(open_store(input_uri).uri)


def source_note(store, source: str, made: str = "masks") -> str | None:
    """A note when an output's record names another input than this run's (`check_settings`' `source`):
    a rerun skips the inputs whose names the output holds, so a second dataset's images of the same
    names were skipped as done without a word (a dataset moved or mounted elsewhere is said too)."""
    try:
        found = read_record(store, made)
    except SettingsChanged:
        return None  # check_settings refuses it, in the job's own words
    was = (found or {}).get("source")
    if was is None or was == source or found.get("binding") is False:  # (nothing of it is done yet)
        return None
    return (f"this output was made from {was}; this run reads {source}: an input whose name the output already "
            "holds is skipped as done, whatever its content")


def _shown(value) -> str:
    """A setting's value as a refusal shows it: one a record or run does not hold (a setting recorded
    only when on, such as the finder's `turned`) is "not set" (it read None)."""
    return "not set" if value is None else repr(value)


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings (a mask job's `finder`) as one level of dotted keys: `finder.crop_mode`."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextmanager
def settings_recorded(store, command: str, settings: dict, done_dir: str, made: str = "masks",
                      follows: dict | None = None, source: str | None = None):
    """`check_settings` around a job: a record this job made is taken back when the job stops with an
    error before anything is done under `done_dir` (an input manifest refused in its read task, an
    empty input), so a corrected rerun with other settings is not refused for masks never made (its
    rerun does every input again). Where the job wrote images before it stopped (interrupted before
    its first manifest shard), the record stays as not binding (`binding: false`): the folder is still
    mfr's output (`jobs.inputs.refuse_foreign_output` refused the rerun as files mfr did not write),
    and the next run records its own settings over it."""
    created = check_settings(store, command, settings, made, follows=follows, source=source)
    try:
        yield
    except BaseException:
        if created:
            try:
                if not store.any_under(done_dir):
                    key = SETTINGS_KEYS[made]
                    if _records_only(store):
                        store.delete(key)
                    else:
                        store.write(key, json.dumps({**json.loads(store.read(key)), "binding": False}, indent=1,
                                                    sort_keys=True).encode())
            except Exception:  # the job's own error is the one to report
                pass
        raise


def _records_only(store) -> bool:
    """Whether `store` holds nothing but mfr's records (settings, leases), at any depth."""
    from jobs.lease import LEASE_KEY

    records = {*SETTINGS_KEYS.values(), LEASE_KEY}
    return all(key.rsplit("/", 1)[-1] in records for key in store.list(""))
