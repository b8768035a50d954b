"""tools/test.py --tta / --out / --show-dir, tools/train.py --auto-scale-lr / --no-validate, publish_model.py and
print_config.py, each on the demo data with the tiny demo models of test_tools.py."""
import hashlib
import json
import os
import os.path as osp
import pickle
import re
import sys

import pytest
import torch
from conftest import REPO
from test_train_and_test import METRIC_PATTERNS, _free_port, demo_root, run, small_config, train  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # trainings, exports, launched processes

_trained = {}


@pytest.fixture
def trained(tmp_path_factory, demo_root):  # noqa: F811
    """(config, checkpoint) of a tiny demo model trained once per task for this module."""
    def get(task):
        if task not in _trained:
            root = tmp_path_factory.mktemp(f'trained_{task}')
            config = small_config(root, demo_root, task)
            result, log = train(config, root / 'work')
            assert result.returncode == 0, log[-3000:]
            _trained[task] = (config, str(sorted((root / 'work').glob('*.pth'))[-1]), log)
        return _trained[task]
    return get


def test_seg_tta_out_and_show_dir(tmp_path, trained):
    """mmseg: --tta runs SegTTAModel over ADE20K's 6 scales x 2 flips (12 forward passes per image, counted),
    --out writes one label PNG per image, --show-dir one picture per image."""
    config, checkpoint, _ = trained('seg')
    out, show = tmp_path / 'labels', tmp_path / 'pictures'
    result, log = run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'w'),
                       '--tta', '--out', str(out), '--show-dir', str(show)])
    assert result.returncode == 0, log[-3000:]
    assert '[boat_mm] test-time augmentation: SegTTAModel, 12 views per image' in log
    assert '[boat_mm] SegTTAModel merged 24 forward passes of the wrapped EncoderDecoder (2 images)' in log, log[-2000:]
    assert re.search(r'mIoU: [\d.]+', log), log[-2000:]
    labels = sorted(out.glob('*.png'))
    assert len(labels) == 2
    from PIL import Image
    label = Image.open(labels[0])
    assert label.size == (64, 64) and set(label.getdata()) <= {1, 2, 3}  # class ids + 1 (reduce_zero_label)
    assert len(list(show.glob('vis_data/vis_image/*.png'))) == 2
    assert '[boat_mm] 2 pictures in' in log


def _move_test_set(data_root, task, target):
    """A copy of the demo test set of ``task`` with its first image only, at ``target``; no training data there."""
    import shutil
    if task == 'seg':
        for kind, suffix in (('images', '.jpg'), ('annotations', '.png')):
            os.makedirs(target / kind / 'validation')
            source = osp.join(data_root, 'ade20k', kind, 'validation')
            first = sorted(f for f in os.listdir(source) if f.endswith(suffix))[0]
            shutil.copy(osp.join(source, first), target / kind / 'validation' / first)
    else:  # cls: ImageNet layout, meta/val.txt lists the images
        with open(osp.join(data_root, 'imagenet', 'meta', 'val.txt')) as f:
            first = f.readline()
        os.makedirs(target / 'meta')
        (target / 'meta' / 'val.txt').write_text(first)
        image = first.split()[0]
        os.makedirs(target / 'val' / osp.dirname(image))
        shutil.copy(osp.join(data_root, 'imagenet', 'val', image), target / 'val' / image)


@pytest.mark.parametrize('task', ['seg', 'cls'])
def test_show_dir_with_the_test_set_elsewhere_and_no_training_data(tmp_path, trained, demo_root, task):  # noqa: F811
    """Evaluating needs only the test set: training and validation roots that do not exist, the test set moved
    with --cfg-options test_dataloader.dataset.data_root (the override the missing-data error recommends),
    and --show-dir draws its one picture (mmseg's visualization hook reads Runner.iter, which built the
    training set)."""
    config, checkpoint, _ = trained(task)
    absent, moved = tmp_path / 'absent', tmp_path / 'moved'
    _move_test_set(demo_root, task, moved)
    elsewhere = tmp_path / 'elsewhere.py'
    elsewhere.write_text(f'_base_ = {config!r}\n'
                         f'train_dataloader = dict(dataset=dict(data_root={str(absent)!r}))\n'
                         f'val_dataloader = dict(dataset=dict(data_root={str(absent)!r}))\n')
    show = tmp_path / 'pictures'
    result, log = run([sys.executable, 'tools/test.py', str(elsewhere), checkpoint, '--work-dir', str(tmp_path / 'w'),
                       '--show-dir', str(show), '--cfg-options', f'test_dataloader.dataset.data_root={moved}'])
    assert result.returncode == 0, log[-3000:]
    assert re.search(METRIC_PATTERNS[task], log), log[-2000:]
    pattern = 'vis_data/vis_image/*.png' if task == 'seg' else '*.png'
    assert len(list(show.glob(pattern))) == 1  # the moved set's one image, not the demo set's
    assert '[boat_mm] 1 pictures in' in log


def test_det_tta_out_and_show_dir(tmp_path, trained):
    """mmdet: Mask R-CNN through MaskDetTTAModel (3 scales x 2 flips); --out gives the results pickle (one
    entry per image, masks included) and the COCO json files; --show-dir one picture per image."""
    config, checkpoint, _ = trained('det')
    out, show = tmp_path / 'results.pkl', tmp_path / 'pictures'
    result, log = run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'w'),
                       '--tta', '--out', str(out), '--show-dir', str(show),
                       '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0'])  # an untrained model's boxes count
    assert result.returncode == 0, log[-3000:]
    assert 'test-time augmentation: MaskDetTTAModel, 6 views per image' in log
    assert 'MaskDetTTAModel merged 12 forward passes of the wrapped MaskRCNN (2 images)' in log, log[-2000:]
    assert re.search(r'coco/segm_mAP: [\d.-]+', log), log[-2000:]
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2
    assert all('masks' in r['pred_instances'] for r in results)
    assert len(results[0]['pred_instances']['masks']) == len(results[0]['pred_instances']['bboxes']) > 0
    for kind in ('bbox', 'segm'):
        with open(tmp_path / f'results.{kind}.json') as f:
            detections = json.load(f)
        assert detections and {'image_id', 'category_id', 'score'} <= set(detections[0])
    assert len(list(show.glob('*.jpg'))) == 2


def test_cls_tta_out_and_show_dir(tmp_path, trained):
    """mmpretrain: flip TTA (AverageClsScoreTTA) built from the test pipeline; --out pickle, --show-dir."""
    config, checkpoint, _ = trained('cls')
    out, show = tmp_path / 'preds.pkl', tmp_path / 'pictures'
    result, log = run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', str(tmp_path / 'w'),
                       '--tta', '--out', str(out), '--show-dir', str(show)])
    assert result.returncode == 0, log[-3000:]
    assert 'test-time augmentation: AverageClsScoreTTA, 2 views per image' in log
    assert 'AverageClsScoreTTA merged 2 forward passes of the wrapped ImageClassifier (3 images)' in log, log[-2000:]
    assert re.search(r'accuracy/top1: [\d.]+', log), log[-2000:]
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 3 and all(len(r['pred_score']) == 3 for r in results)
    assert len(list(show.glob('*.png'))) == 3


def test_out_for_a_pickle_toolbox_needs_a_pkl_path(tmp_path, trained):
    config, checkpoint, _ = trained('cls')
    result, log = run([sys.executable, 'tools/test.py', config, checkpoint, '--out', str(tmp_path / 'x.json')])
    assert result.returncode == 1 and 'give a .pkl path' in log and 'Traceback' not in log


def test_auto_scale_lr_with_two_processes_and_no_validate(tmp_path, demo_root):  # noqa: F811
    """2 CPU processes x batch 2 = 4 against the config's base batch 16: every learning rate x 0.25, read back
    from the optimizer state the run saved; the start-of-training log says so; --no-validate: no evaluation."""
    config = small_config(tmp_path, demo_root, 'seg')
    work = tmp_path / 'work'
    result, log = run(['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(work), '--auto-scale-lr',
                       '--no-validate', '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=1'],
                      env={'PYTHON': sys.executable, 'PORT': str(_free_port()), 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, log[-4000:]
    base_lr = 4e-4  # configs/demo/upernet_boat_cswin_ade20k_demo.py
    assert 'total batch 4 (2 processes x 2), learning rate 0.0001, config base batch 16 (auto-scaled by 0.25)' in log
    optimizer = torch.load(work / 'iter_2.pth', map_location='cpu', weights_only=False)['optimizer']
    rates = [group['initial_lr'] for group in optimizer['param_groups']]
    assert rates == pytest.approx([base_lr * 4 / 16] * len(rates))
    assert not re.search(r'mIoU: [\d.]+', log) and 'Iter(val)' not in log


def test_train_log_states_batch_and_lr_without_scaling(trained):
    _, _, log = trained('cls')
    assert re.search(r'total batch 4 \(1 process x 4\), learning rate 0\.0005, config base batch 1024 '
                     r'\(not scaled: --auto-scale-lr scales it\)', log), log[-3000:]


def test_publish_model_drops_training_state_and_names_the_hash(tmp_path, trained):
    config, checkpoint, _ = trained('cls')
    assert 'optimizer' in torch.load(checkpoint, map_location='cpu', weights_only=False)
    result, log = run([sys.executable, 'tools/model_converters/publish_model.py', checkpoint,
                       str(tmp_path / 'boat_demo.pth')])
    assert result.returncode == 0, log
    published = list(tmp_path.glob('boat_demo-*.pth'))
    assert len(published) == 1 and not list(tmp_path.glob('*.unhashed.pth'))
    digest = hashlib.sha256(published[0].read_bytes()).hexdigest()
    assert published[0].name == f'boat_demo-{digest[:8]}.pth'
    content = torch.load(published[0], map_location='cpu', weights_only=True)
    assert set(content) == {'meta', 'state_dict'}
    result, log = run([sys.executable, 'tools/test.py', config, str(published[0]), '--work-dir', str(tmp_path / 'w')])
    assert result.returncode == 0 and re.search(r'accuracy/top1: [\d.]+', log), log[-3000:]
    # ... and as backbone weights through init_cfg, as a detection / segmentation config loads them
    from mmengine.config import Config

    from boat_mm import BOATSwinTransformer
    arch = Config.fromfile(config).model.backbone.arch
    init_cfg = dict(type='Pretrained', checkpoint=str(published[0]), prefix='backbone.')
    backbone = BOATSwinTransformer(arch=arch, out_indices=(3,), init_cfg=init_cfg)
    backbone.init_weights()
    weights = content['state_dict']
    assert all(torch.equal(value, weights[f'backbone.{name}']) for name, value in backbone.state_dict().items())


def test_publish_model_refuses_what_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / 'bad.pth'
    torch.save({'weights': torch.zeros(1)}, bad)
    result, log = run([sys.executable, 'tools/model_converters/publish_model.py', str(bad), str(tmp_path / 'o.pth')])
    assert result.returncode == 1 and 'not an mmengine checkpoint' in log and not list(tmp_path.glob('o*'))


def test_print_config_shows_the_merged_config(tmp_path):
    saved = tmp_path / 'merged.py'
    result, log = run([sys.executable, 'tools/misc/print_config.py', 'configs/upernet_boat_cswin_ade20k.py',
                       '--cfg-options', 'model.backbone.drop_path_rate=0.5', '--save-path', str(saved)])
    assert result.returncode == 0, log
    assert "type='BOATCSWinTransformer'" in result.stdout and 'drop_path_rate=0.5' in result.stdout
    assert "type='SegTTAModel'" in result.stdout  # inherited from mmseg's ADE20K base
    from mmengine.config import Config
    assert Config.fromfile(str(saved)).model.backbone.drop_path_rate == 0.5
    missing = run([sys.executable, 'tools/misc/print_config.py', str(tmp_path / 'none.py')])[0]
    assert missing.returncode == 1 and 'config not found' in missing.stderr


def test_mask_tta_flips_masks_back_and_keeps_each_boxs_own_mask():
    """Two views of a 6x8 image, the second mirrored: the same object (a box and its mask in the left half)
    merges into one detection whose mask is in the left half again; a second object survives with its mask."""
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    from boat_mm.models.test_time_augs.det_tta import MaskDetTTAModel

    class Detector(torch.nn.Module):  # the merge never calls it
        def test_step(self, data):
            raise AssertionError('not called')
    model = MaskDetTTAModel(module=Detector(), tta_cfg=ConfigDict(nms=dict(type='nms', iou_threshold=0.5),
                                                                   max_per_img=100))
    height, width = 6, 8
    left = torch.zeros(height, width, dtype=torch.bool)
    left[1:4, 0:3] = True
    views = []
    for flipped in (False, True):
        instances = InstanceData()
        box = torch.tensor([[0., 1., 3., 4.]])
        mask = left.clone()
        if flipped:
            box = torch.tensor([[width - 3., 1., width - 0., 4.]])
            mask = mask.flip(-1)
        other_box = torch.tensor([[4., 0., 8., 2.]]) if not flipped else torch.tensor([[0., 0., 4., 2.]])
        other_mask = torch.zeros(height, width, dtype=torch.bool)
        other_mask[0:2, 4:8] = True
        if flipped:
            other_mask = other_mask.flip(-1)
        instances.bboxes = torch.cat([box, other_box])
        instances.scores = torch.tensor([0.9 if flipped else 0.8, 0.5])
        instances.labels = torch.tensor([0, 1])
        instances.masks = torch.stack([mask, other_mask])
        sample = DetDataSample(metainfo=dict(ori_shape=(height, width), flip=flipped,
                                             flip_direction='horizontal' if flipped else None))
        sample.pred_instances = instances
        views.append(sample)
    merged = model._merge_single_sample(views).pred_instances
    assert len(merged) == 2
    assert merged.scores.tolist() == pytest.approx([0.9, 0.5])
    assert torch.equal(merged.masks[0], left) and merged.bboxes[0].tolist() == [0., 1., 3., 4.]
    assert merged.masks[1][0:2, 4:8].all() and merged.masks[1].sum() == 8


def test_tta_pipelines_feed_every_ade20k_scale_through_fsla():
    """ADE20K TTA scales a 512x683 image from 256x342 to 896x1195 (1.75x): every size, FSLA on, runs whole
    (a narrow model, the full token counts; benchmarks/bench_tta_sizes.py times the full BOAT-CSWin-T)."""
    from mmengine.config import Config

    from boat_mm import BOATCSWinTransformer
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'upernet_boat_cswin_ade20k.py'))
    ratios = [step.scale_factor for step in cfg.tta_pipeline[1].transforms[0]]
    assert ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    backbone = BOATCSWinTransformer(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 4, 4),
                                              split_sizes=(1, 2, 7, 7)), out_indices=(0, 1, 2, 3)).eval()
    for ratio in ratios:
        height, width = round(512 * ratio), round(683 * ratio)
        with torch.no_grad():
            outputs = backbone(torch.randn(1, 3, height, width))
        assert outputs[0].shape[-2:] == ((height - 3) // 4 + 1, (width - 3) // 4 + 1)  # 7x7 stride-4 stem, pad 2
        assert all(torch.isfinite(o).all() for o in outputs)


def test_every_config_declares_the_batch_its_learning_rate_is_for():
    from mmengine.config import Config
    recipe_batch = {'cls': 1024, 'mask-rcnn': 16, 'upernet': 16}  # 16 GPUs x 64; 8 x 2; 8 x 2
    for name in sorted(os.listdir(osp.join(REPO, 'configs'))):
        if name.endswith('.py'):
            cfg = Config.fromfile(osp.join(REPO, 'configs', name))
            assert cfg.auto_scale_lr.base_batch_size == recipe_batch[name.split('_')[0]], name
            assert not cfg.auto_scale_lr.get('enable', False), name  # only --auto-scale-lr switches it on
