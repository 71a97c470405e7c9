"""Stage `pairs_export`: the preference pairs for other trainers, a `datasets` dataset, a parquet file and a
LLaMA-Factory entry.

`pairs_export/<key>/` (keyed on the pairs and the world) holds

* `dataset/`: `datasets.Dataset.save_to_disk` (`datasets.load_from_disk(...)`);
* `pairs.parquet`: the same rows (`datasets.load_dataset("parquet", data_files=...)`, pandas, LLaMA-Factory);
* `dataset_info.json`: the LLaMA-Factory entry `tsq_pairs` (sharegpt formatting, `ranking: true`), so
  `dataset_dir: <this folder>` and `dataset: tsq_pairs` train on it;
* `README.md`: what the columns are.

Columns. `prompt`, `chosen`, `rejected` are TRL's conversational preference format: the prompt as the
messages before any chat template (system, user), each completion as one assistant message, so a trainer
that applies the model's chat template applies it once. A text the prompt carried after the chat template
(a "<think>\\n" generation prefix) starts each assistant message. `question` is the raw question;
`prompt_text`, `chosen_text`, `rejected_text` are the exact strings the model was conditioned on and
wrote (TRL's standard format under other names, for a model without a chat template such as the
synthetic world's tiny model); `chosen_message` / `rejected_message` are the single assistant messages
LLaMA-Factory's sharegpt reader expects. The remaining columns are the pairs file's own (lengths in
completion tokens without EOS, problem id and level, sample indices).
"""

from __future__ import annotations

import json

from tsq.cache import Artifact, Build, Stage, world_key
from tsq.data.base import Problem, ProblemSource
from tsq.stages.context import RunContext
from tsq.stages.pairs import Pairs
from tsq.training.pairs_data import read_pairs

PAIRS_EXPORT = Stage("pairs_export", 1)
LLAMA_FACTORY_NAME = "tsq_pairs"
PARQUET_FILE = "pairs.parquet"
DATASET_DIR = "dataset"


def export_rows(world: ProblemSource, problems: dict[str, Problem], pairs: list[dict], where: str) -> list[dict]:
    """The exported rows of `pairs` (rows of a pairs file at `where`; problems by id)."""
    out, chats = [], {}  # (a problem has up to pairs.max_pairs pairs: its chat template is rendered once)
    for n, row in enumerate(pairs, start=1):
        problem = problems.get(row["problem_id"])
        if problem is None:
            raise ValueError(f"{where}, row {n}: problem {row['problem_id']!r} is not in the world's split")
        if problem.prompt != row["prompt"]:
            raise ValueError(
                f"{where}, row {n}: the pair's prompt is not problem {problem.id}'s prompt in data={world.name} "
                "(the world changed since the pairs were built)"
            )
        chat = chats.get(problem.id) or chats.setdefault(problem.id, world.conversation(problem))
        chosen = {"role": "assistant", "content": chat.response_prefix + row["chosen"]}
        rejected = {"role": "assistant", "content": chat.response_prefix + row["rejected"]}
        extra = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        out.append(
            {
                "prompt": chat.messages,
                "chosen": [chosen],
                "rejected": [rejected],
                "question": chat.question,
                "prompt_text": row["prompt"],
                "chosen_text": row["chosen"],
                "rejected_text": row["rejected"],
                "chosen_message": chosen,
                "rejected_message": rejected,
                **extra,
            }
        )
    return out


def llama_factory_entry(file_name: str = PARQUET_FILE) -> dict:
    """The `dataset_info.json` entry that reads the export as a sharegpt preference dataset."""
    return {
        LLAMA_FACTORY_NAME: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "prompt", "chosen": "chosen_message", "rejected": "rejected_message"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def pairs_export_key_parts(ctx: RunContext, pairs_key: str) -> tuple[dict, dict]:
    return {}, {"pairs": pairs_key, "world": world_key(ctx.world)}


def pairs_export(ctx: RunContext, pairs: Pairs, problems: dict[str, Problem]) -> Artifact:
    """The export of a pairs artifact (cached; built in a second for the synthetic world)."""

    def build(job: Build) -> None:
        import datasets

        rows = export_rows(ctx.world, problems, read_pairs(pairs.path), str(pairs.path))
        table = datasets.Dataset.from_list(rows)
        table.save_to_disk(str(job.dir / DATASET_DIR))
        table.to_parquet(str(job.dir / PARQUET_FILE))
        (job.dir / "dataset_info.json").write_text(json.dumps(llama_factory_entry(), indent=2))
        (job.dir / "README.md").write_text(dataset_card(ctx.world.name, pairs, len(rows)))

    return ctx.store.cached(
        PAIRS_EXPORT,
        *pairs_export_key_parts(ctx, pairs.key),
        build,
        doing="exporting the pairs (datasets, parquet, LLaMA-Factory)",
        description={"pairs": pairs.key},
    )


def dataset_card(world_name: str, pairs: Pairs, n_rows: int) -> str:
    """A short dataset card: where the rows come from and how to load them."""
    return f"""# tsq preference pairs ({world_name})

{n_rows} preference pairs built by tsq from its pairs artifact `{pairs.key}` ({pairs.path}).

- `prompt`, `chosen`, `rejected`: TRL's conversational preference format (the messages before any chat
  template; one assistant message per completion).
- `question`: the raw question; `prompt_text`, `chosen_text`, `rejected_text`: the exact strings the model
  saw and wrote (TRL's standard format under other names, for models without a chat template). tsq
  tokenizes prompt and completion apart; a trainer that joins the two strings (TRL) needs the separator
  the tokenizer expects between them: a space for the synthetic world's word-level tokenizer
  (`prompt_text + " "`), none after a chat template's assistant header.
- `chosen_message`, `rejected_message`: the assistant messages LLaMA-Factory reads (`dataset_info.json`,
  dataset name `{LLAMA_FACTORY_NAME}`).
- `chosen_len`, `rejected_len`: completion tokens without EOS; `problem_id`, `level`, sample indices.

Load: `datasets.load_from_disk("{DATASET_DIR}")` or
`datasets.load_dataset("parquet", data_files="{PARQUET_FILE}")`.
"""
