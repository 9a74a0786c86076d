"""`fedray watermark verify MODEL_OR_RUN_DIR --key KEYFILE`: does this model carry an owner's watermark?

MODEL_OR_RUN_DIR is a run directory (its newest checkpoint's global model), a
folder written by `fedray export` (its `adapter/`), or a PEFT adapter folder
itself (loaded onto the base model its adapter_config.json names). Each key is
checked on its own: the evidence (bit error rate, or trigger accuracy), the
p-value of scoring that well without the watermark (a binomial test against
chance: 50% per bit, 1/classes per trigger) and a verdict. Exit status 0 when
every key's watermark is detected, 1 when one is not, 2 for bad input (a missing
key, a folder that holds no model, a key made for another model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from fedray.cli.trust import add_allow_code
from fedray.config.errors import ConfigError

EXIT_NOT_DETECTED = 1


def add_parser(sub) -> None:
    """`fedray watermark verify ...` under the main parser's subcommands."""
    watermark = sub.add_parser("watermark", help="check a model for an owner's watermark")
    actions = watermark.add_subparsers(dest="action", required=True)
    verify = actions.add_parser("verify", help="bit error rate / trigger accuracy and a p-value for each key")
    verify.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                        help="run directory, `fedray export` folder, or PEFT adapter folder")
    verify.add_argument("--key", action="append", required=True, metavar="KEYFILE",
                        help="an owner's key file (repeat for several owners)")
    verify.add_argument("--alpha", type=float, default=1e-3,
                        help="significance level: detected when the p-value is below it (default 0.001)")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    add_allow_code(verify)


def main(args: argparse.Namespace) -> int:
    from fedray.lifecycle.watermark import read_key, verify
    from fedray.lifecycle.watermark.verify import key_scheme

    if not 0 < args.alpha < 1:
        raise ConfigError([f"--alpha must be in (0, 1), got {args.alpha}"], "command line")
    try:
        keys = [read_key(path) for path in args.key]
        for path, key in zip(args.key, keys):  # data only: a scheme fedray may build, before the model loads
            try:
                key_scheme(key, args.allow_code)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        model, what = load_model(args.model, args.allow_code)
        results = [{"key": path, **verify(model, key, args.alpha, args.allow_code)}
                   for path, key in zip(args.key, keys)]
    except (ValueError, OSError) as err:
        raise ConfigError([str(err)], "command line") from None
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"fedray watermark: {what}")
        for result in results:
            print(describe(result))
    return 0 if all(r["detected"] for r in results) else EXIT_NOT_DETECTED


def describe(result: dict[str, Any]) -> str:
    """One line per key: the evidence, the p-value and the verdict."""
    if "ber" in result:
        evidence = f"{result['bit_errors']}/{result['bits']} bit errors (BER {result['ber']:.3f})"
    else:
        evidence = (f"{result['matches']}/{result['trials']} trigger outputs right "
                    f"(accuracy {result['trigger_accuracy']:.3f}, chance {result['chance']:.3g})")
    verdict = "watermark detected" if result["detected"] else "not detected"
    sign = "<" if result["detected"] else ">="
    return (f"  client {result['owner']} ({result['scheme']}, {result['key']}): {evidence}; "
            f"p = {result['p_value']:.3g} {sign} {result['alpha']:g}: {verdict}")


def load_model(where: str | Path, allow_code: Sequence[str] = ()):
    """(model, description) from a run directory (code its config names only if
    `allow_code` covers it), an export folder or an adapter folder."""
    where = Path(where)
    if (where / "config.yaml").is_file():
        return _run_model(where, allow_code)
    for folder in (where, where / "adapter"):
        if (folder / "adapter_config.json").is_file():
            return _adapter_model(folder)
    raise ValueError(f"{where} is neither a fedray run directory (config.yaml) nor a `fedray export` "
                     "folder or PEFT adapter (adapter_config.json)")


def _run_model(run_dir: Path, allow_code: Sequence[str]):
    from fedray.config.load import load_run_config
    from fedray.server.checkpoint import list_checkpoints, load_checkpoint
    from fedray.server.state_checks import RunShape
    from fedray.server.export import global_model

    cfg = load_run_config(run_dir / "config.yaml", allow_code)
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise ValueError(f"no checkpoint under {run_dir / 'checkpoints'} (server.checkpoint_every was 0?)")
    state = load_checkpoint(found[-1], RunShape.of(cfg))
    return global_model(cfg, state, _data_info(cfg)), f"{run_dir}, global model after round {state.server_round}"


def _data_info(cfg):
    """What the model builder needs to know of the run's data (without splitting it)."""
    from fedray.data.datasets import DATASETS
    from fedray.data.instructions import Conversations
    from fedray.data.text import TextCorpus, text_info
    from fedray.data.tokenize import TOKENIZERS

    def for_text():
        return text_info(cfg.data.seq_len, TOKENIZERS.build(cfg.data.tokenizer, cfg.model).vocab_size)

    if cfg.model.name == "hf_causal_lm":
        return for_text()
    data = DATASETS.build(cfg.data.dataset, cfg.data)
    return for_text() if isinstance(data, (TextCorpus, Conversations)) else data.info


def _adapter_model(folder: Path):
    import warnings

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base and not Path(base).is_absolute() and (folder.parent / base).is_dir():
        base = str(folder.parent / base)  # `fedray export` names it relative to the export folder
    if not base or not Path(base).is_dir():
        raise ValueError(f"{folder}/adapter_config.json names the base model {base!r}, which is not a local "
                         "folder; fedray downloads nothing")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, local_files_only=True), folder)
    return model.eval(), f"{folder}, PEFT adapter on {base}"
