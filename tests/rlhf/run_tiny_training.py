"""Train the tiny LM inside a run folder, as a separate process (the SIGTERM test runs this).

python tests/rlhf/run_tiny_training.py RUN_FOLDER MODEL_DIR MAX_STEPS
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhf.runs import RunDir, run_callback, run_guard  # noqa: E402
from tests.tiny import tiny_lm_trainer  # noqa: E402

if __name__ == "__main__":
    run, model_dir, steps = RunDir(Path(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])
    with run_guard(run) as stop:
        from transformers import TrainerCallback

        class Slow(TrainerCallback):  # slow enough that the test's signal lands mid-training
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(0.2)

        trainer = tiny_lm_trainer(model_dir, run.trainer_dir, steps, [Slow(), run_callback(run, stop)])
        trainer.train(resume_from_checkpoint=str(run.last_checkpoint()) if run.last_checkpoint() else None)
        trainer.save_model(str(run.checkpoint_dir))
