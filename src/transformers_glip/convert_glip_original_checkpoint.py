"""Command line of the checkpoint converter; the code lives in `transformers_glip.conversion`, one module per role.

```
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_tiny_model_o365_goldg.pth \
    --original-config configs/pretrain/glip_Swin_T_O365_GoldG.yaml --text-model bert-base-uncased --output glip-t
python -m transformers_glip.convert_glip_original_checkpoint --checkpoint glip_large_model.pth \
    --variant glip-l --text-model bert-base-uncased --output glip-l
```

`--text-model` is a local BERT folder (config.json + tokenizer files) or a Hub id; `--overwrite` replaces a
non-empty output folder that is not an earlier conversion. A failed check (unknown yaml key, NaN weights, a missing
file, ...) prints the error and exits with status 1. From Python: `transformers_glip.conversion.convert_checkpoint`.
"""

from .conversion.cli import main, run_command_line

__all__ = ["main", "run_command_line"]

if __name__ == "__main__":
    raise SystemExit(run_command_line())
