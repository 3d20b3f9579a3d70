"""The model summary printed when a fit starts, without the FLOPs that Lightning cannot count here."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class ParameterSummary(ModelSummary):
    """Lightning's model summary (layers, parameters, mode, size). Lightning counts FLOPs on a
    forward pass over the module's ``example_input_array``; the models here set none (their
    forward pass draws noise from the global generator, which a summary must not move), so its
    FLOPs column and total would read 0: they are left out unless a count exists."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **summarize_kwargs: Any) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]

        def row(cells: list[str]) -> str:
            return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
        lines = [row([name for name, _ in columns]), "-" * len(row([name for name, _ in columns]))]
        lines += [row(list(cells)) for cells in zip(*(values for _, values in columns))]
        lines += ["", f"{get_human_readable_count(trainable_parameters).strip()} trainable params, "
                      f"{get_human_readable_count(total_parameters - trainable_parameters).strip()} non-trainable, "
                      f"{get_formatted_model_size(model_size)} MB; modules: {total_training_modes['train']} in train mode, "
                      f"{total_training_modes['eval']} in eval mode"]
        if total_flops:
            lines.append(f"total FLOPs: {get_human_readable_count(total_flops).strip()}")
        rank_zero_info("\n".join(lines))
