"""`seemore data check`: read a whole dataset, decode every image, and report what it holds
and every row that training would stumble on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seemore.data.images import load_image
from seemore.data.records import Bad, read_records
from seemore.errors import UserError
from seemore.prompt import conversation_length
from seemore.tokenizer import Tokenizer

LENGTH_BUCKETS = (16, 32, 64, 128, 256)  # characters of an answer or caption


@dataclass
class Report:
    rows: int = 0
    images: int = 0  # distinct image files, or encoded images
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    lengths: Counter = field(default_factory=Counter)  # answer-length bucket -> answers
    characters: Counter = field(default_factory=Counter)  # every character of the text
    unknown: Counter = field(default_factory=Counter)  # characters outside the tokenizer
    bad: list[Bad] = field(default_factory=list)


def bucket(n: int) -> str:
    for top in LENGTH_BUCKETS:
        if n <= top:
            return f"<= {top}"
    return f"> {LENGTH_BUCKETS[-1]}"


def check(path: str | Path, image_column: str = "", tokenizer: Tokenizer | None = None,
          context: int = 192, n_visual: int = 16) -> Report:
    """Read every row; a row is bad when it cannot be read, its image cannot be decoded,
    its text has characters the tokenizer (when given) lacks, or it is longer than the
    context."""
    report, seen = Report(), {}
    for record in read_records(path, image_column):
        report.rows += 1
        if isinstance(record, Bad):
            report.bad.append(record)
            continue
        key = record.image if isinstance(record.image, Path) else record.image_key()
        if key not in seen:
            try:
                seen[key] = load_image(record.image_source(), name=record.location).size
            except UserError as e:
                seen[key] = None
                report.bad.append(Bad(record.location, str(e).removeprefix(
                    f"{record.location}: ")))
            else:
                report.sizes[seen[key]] += 1
        if seen[key] is None:
            continue
        text = "".join(q + a for q, a in record.turns)
        report.characters.update(text)
        report.lengths.update(bucket(len(a)) for _, a in record.turns)
        if tokenizer is not None and (unknown := tokenizer.unknown_chars(text)):
            report.unknown.update(c for c in text if c in unknown)
            report.bad.append(Bad(record.location, "characters the tokenizer does not know: "
                                  + repr("".join(sorted(set(unknown))))))
            continue
        length = conversation_length(record.turns, n_visual)
        if length > context:
            report.bad.append(Bad(record.location, f"{length} tokens with the image; the "
                                  f"context (model.decoder.max_seq_len) is {context}"))
    report.images = len(seen)
    return report


def format_report(report: Report, path: str | Path) -> str:
    lines = [f"{path}: {report.rows} rows, {report.images} images, {len(report.bad)} bad"]
    if report.sizes:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in report.sizes.most_common(5))
        more = len(report.sizes) - 5
        lines.append(f"image sizes: {common}" + (f" and {more} more" if more > 0 else ""))
    if report.lengths:
        order = [f"<= {t}" for t in LENGTH_BUCKETS] + [f"> {LENGTH_BUCKETS[-1]}"]
        lines.append("answer/caption lengths (characters): " + ", ".join(
            f"{b}: {report.lengths[b]}" for b in order if report.lengths[b]))
    if report.characters:
        chars = "".join(sorted(report.characters))
        lines.append(f"characters ({len(chars)}): {chars!r}")
    if report.unknown:
        lines.append("characters outside the tokenizer: " + ", ".join(
            f"{c!r} x{n}" for c, n in report.unknown.most_common()))
    lines += [f"bad: {bad}" for bad in report.bad]
    return "\n".join(lines)
