"""`fedray generate`: a quick look at what a trained model answers (greedy decoding)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedray.config.errors import ConfigError


def add_parser(sub) -> None:
    """`fedray generate RUN_DIR|EXPORT_DIR --prompt ... | --prompts FILE`."""
    generate = sub.add_parser("generate", help="answer prompts with a run's global model or an export")
    generate.add_argument("model", metavar="RUN_DIR|EXPORT_DIR",
                          help="run directory (newest checkpoint) or `fedray export` folder")
    what = generate.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", action="append", help="a user message (repeat for several)")
    what.add_argument("--prompts", type=Path, help="a file with one prompt per line, or JSONL with `instruction`")
    generate.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    generate.add_argument("--json", action="store_true", help="print one JSON object per prompt")


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts given on the command line or in the file (plain lines or JSONL records)."""
    if args.prompt:
        return list(args.prompt)
    if not args.prompts.is_file():
        raise ConfigError([f"--prompts {args.prompts}: no such file"], "command line")
    out = []
    for number, line in enumerate(args.prompts.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            record = json.loads(line)
            if not isinstance(record.get("instruction"), str):
                raise ConfigError([f"--prompts {args.prompts}:{number}: a JSON line needs a string `instruction`"],
                                  "command line")
            line = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        out.append(line)
    return out


def load_for_generation(where: Path):
    """(model, tokenizer, chat format) of a run directory or an export folder."""
    from fedray.cli.watermark import load_model
    from fedray.data.chat import ChatFormat
    from fedray.data.tokenize import TOKENIZERS, HFTokenizer

    model, _ = load_model(where)
    if (where / "config.yaml").is_file():
        from fedray.config.load import load_config

        cfg = load_config(where / "config.yaml")
        tokenizer = TOKENIZERS.build(cfg.data.tokenizer, cfg.model)
        return model, tokenizer, ChatFormat.for_tokenizer(tokenizer, cfg.data.instruct.template.value,
                                                          cfg.data.instruct.system)
    from transformers import AutoTokenizer

    folder = where / "adapter" if (where / "adapter").is_dir() else where
    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(folder, local_files_only=True))
    return model, tokenizer, ChatFormat.for_tokenizer(tokenizer)


def main(args: argparse.Namespace) -> int:
    from fedray.models.generate import greedy_generate

    if args.max_new_tokens < 1:
        raise ConfigError([f"--max-new-tokens must be >= 1, got {args.max_new_tokens}"], "command line")
    prompts = read_prompts(args)
    try:
        model, tokenizer, fmt = load_for_generation(Path(args.model))
    except (ValueError, OSError) as err:
        raise ConfigError([f"{args.model}: {err}"], "command line") from None
    ids = [fmt.prompt_ids([{"role": "user", "content": p}]) for p in prompts]
    answers = greedy_generate(model, ids, args.max_new_tokens, tokenizer.eos_id)
    for prompt, answer in zip(prompts, answers):
        text = tokenizer.decode(answer).strip()
        print(json.dumps({"prompt": prompt, "answer": text}) if args.json else f">>> {prompt}\n{text}\n")
    return 0
