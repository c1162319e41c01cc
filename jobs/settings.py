"""What an output was made with: `_mfr_settings.json` under it, written by the job that starts it.

A rerun skips every input that already has rows, so a rerun asking for other masks (another style,
seed, face policy, crop size, ...) would silently finish the output with the new masks beside the
old ones and report them as one run. Each job that writes masks records the settings that decide
them when it starts an output, and a later job on that output must ask the same, or is refused
before any work with what differs. An output from before this record is recorded as it is run.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager

SETTINGS_KEY = "_mfr_settings.json"                  # masks: mfr mask, mfr run
SETTINGS_KEYS = {"masks": SETTINGS_KEY, "embeddings": "_mfr_embed_settings.json"}  # apart: one folder may hold both


# settings first recorded after outputs were made without them: such an output's rerun is not refused
# for them (what it was made with is not known)
RECORDED_SINCE = frozenset({"input", "manifest_encoding"})


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


def augment_settings(options, input_uri=None, manifest_encoding: str | None = None) -> dict:
    """The settings of `maskgen.augment.AugmentOptions` that decide what is written, as plain JSON
    values (a style object by its name), and with `input_uri` how the input is read
    (`input_settings`)."""
    settings = dataclasses.asdict(dataclasses.replace(options, style="seed"))  # a style object need not be one
    settings["style"] = getattr(options.style, "name", str(options.style))
    if input_uri is not None:
        settings.update(input_settings(input_uri, manifest_encoding))
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def check_settings(store, command: str, settings: dict, made: str = "masks", record: bool = True,
                   follows: dict | None = None) -> bool:
    """Record `settings` under `store` (an output) when it has none, else refuse with SettingsChanged
    when they differ from the recorded ones (`made`: what the settings decide, `masks` or
    `embeddings`, each recorded in a file of its own). True when this call recorded them. With
    `record=False` (a dry run) it only refuses, as the run would. `follows` names the setting each
    derived one follows from (`embed`'s finder fields follow `masked` unless given): a refusal asks
    for the setting a user gives, and says which of the others come with it."""
    key = SETTINGS_KEYS[made]
    if store.exists(key):
        try:
            recorded = json.loads(store.read(key))["settings"]
        except (ValueError, KeyError, TypeError):
            recorded = None  # unreadable (cut short): recorded again below
        if recorded is not None:
            recorded, settings = _flat(recorded), _flat(settings)  # a refusal names the field that differs
            changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k)
                             and not (k in RECORDED_SINCE and k not in recorded))
            if changed == ["manifest_encoding"]:
                was, now = ({"auto": "auto (UTF-8, else GBK)"}.get(v, v) for v in
                            (recorded["manifest_encoding"], settings["manifest_encoding"]))
                raise SettingsChanged(f"{store.uri} was listed from the manifest read as {was} "
                                      f"(--manifest-encoding); this run reads it as {now}. Its paths name the files, "
                                      "so the rows of the first reading would stay beside this run's: write to "
                                      "another output, or read it as before")
            if changed:
                follows = follows or {}
                derived = [k for k in changed if follows.get(k) in changed]
                given = [k for k in changed if k not in derived]
                was = ", ".join(f"{k}={recorded.get(k)!r}" for k in given)
                now = ", ".join(f"{k}={settings.get(k)!r}" for k in given)
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
    store.write(key, json.dumps({"command": command, "settings": settings}, indent=1,
                                sort_keys=True).encode())
    return True


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
                      follows: dict | None = None):
    """`check_settings` around a job: a record this job made is taken back when the job stops with an
    error before anything is done under `done_dir` (an input manifest refused in its read task, an
    empty input), so a corrected rerun with other settings is not refused for masks never made."""
    created = check_settings(store, command, settings, made, follows=follows)
    try:
        yield
    except BaseException:
        if created:
            try:
                if not store.any_under(done_dir):
                    store.delete(SETTINGS_KEYS[made])
            except Exception:  # the job's own error is the one to report
                pass
        raise
