"""What one visitor of the web demo can cost the server: the upload size, the requests
waiting for the model, the prompt's length, how long an upload is kept. `lavis-ib serve`
takes each as an option; imports no Gradio, so the command checks them before loading."""
from __future__ import annotations

from dataclasses import dataclass

from lavis_ib.models.generation import SERVE_MAX_PROMPT_CHARS

MB = 1_000_000   # a megabyte as `--max-upload-mb` counts it


@dataclass(frozen=True)
class ServeLimits:
    """The web demo's limits (docs/web_demo.md, "Limits")."""

    max_upload_mb: float = 50.0     # an upload over this is refused (HTTP 413) while it streams
    queue_size: int = 16            # requests waiting for the model; more: "queue is full"
    max_prompt_chars: int = SERVE_MAX_PROMPT_CHARS   # a longer prompt is refused
    upload_max_age_s: int = 3600    # uploads older than this are deleted (checked as often)

    @property
    def max_file_size(self) -> int:
        """`max_upload_mb` in bytes, as Gradio's `launch(max_file_size=...)` takes it."""
        return int(self.max_upload_mb * MB)

    @property
    def delete_cache(self) -> tuple[int, int]:
        """Gradio's `Blocks(delete_cache=(frequency, age))`: every `upload_max_age_s`
        seconds, delete uploads older than that."""
        return (self.upload_max_age_s, self.upload_max_age_s)

    def problems(self) -> list[str]:
        """Each limit out of range, named by its option."""
        out = []
        if not self.max_upload_mb > 0:
            out.append(f"--max-upload-mb {self.max_upload_mb} must be above 0")
        for flag, value in (("--queue-size", self.queue_size),
                            ("--max-prompt-chars", self.max_prompt_chars),
                            ("--upload-max-age", self.upload_max_age_s)):
            if value < 1:
                out.append(f"{flag} {value} must be at least 1")
        return out
