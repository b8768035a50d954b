"""The train log's first word on the run: total batch and the learning rate the optimizer really starts from."""
from mmengine.hooks import Hook

__all__ = ['TrainSetupLogger', 'describe_train_setup']


class TrainSetupLogger(Hook):
    """Logs, when training starts, the total batch and the learning rate the optimizer really starts from
    (after ``--auto-scale-lr``, before warm-up factors), so that every run's log says both."""
    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        runner.logger.info(describe_train_setup(runner))


def describe_train_setup(runner) -> str:
    """'total batch 4 (2 processes x 2), base batch 16, lr 5e-05 (scaled by 0.25)' for the train log."""
    per_gpu = runner.cfg.train_dataloader.batch_size  # the built loader's is None under a batch sampler (mmdet)
    total = runner.world_size * per_gpu
    scaling = runner.auto_scale_lr or {}
    base = scaling.get('base_batch_size')
    wrappers = runner.optim_wrapper.values() if hasattr(runner.optim_wrapper, 'values') else [runner.optim_wrapper]
    rates = sorted({group.get('initial_lr', group['lr']) for wrapper in wrappers
                    for group in wrapper.optimizer.param_groups})
    lr = ', '.join(f'{rate:.6g}' for rate in rates)
    processes = f'{runner.world_size} process' + ('es' if runner.world_size > 1 else '')
    text = f'total batch {total} ({processes} x {per_gpu}), learning rate {lr}'
    if base:
        text += f', config base batch {base}'
        text += (f' (auto-scaled by {total / base:.6g})' if scaling.get('enable')
                 else ' (not scaled: --auto-scale-lr scales it)')
    return text
