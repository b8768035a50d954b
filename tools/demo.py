"""The main job of ``make demo``: build models from all three toolboxes and run them once on CPU.

Stock (BOAT-free) models from mmpretrain, mmdet and mmseg prove the stack works; then BOAT-Swin and
BOAT-CSWin backbones are built from each toolbox's registry and run on an odd-sized image.
"""
import time

import torch
from mmengine.config import ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import boat_mm  # noqa: F401  (registers the BOAT backbones)

IMAGE_SIZE = (3, 128, 160)


def _timed(label, fn):
    start = time.perf_counter()
    result = fn()
    print(f'  {label}: {result} ({time.perf_counter() - start:.2f} s)')


def stock_models():
    from mmdet.registry import MODELS as DET
    from mmdet.structures import DetDataSample
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG
    from mmseg.structures import SegDataSample
    image = torch.randn(1, *IMAGE_SIZE)
    print('Stock OpenMMLab models (random weights, CPU):')

    init_default_scope('mmpretrain')
    classifier = CLS.build(dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
                                neck=dict(type='GlobalAveragePooling'),
                                head=dict(type='LinearClsHead', num_classes=10, in_channels=512))).eval()
    _timed('mmpretrain ResNet-18 classifier, logits shape',
           lambda: tuple(classifier(image, mode='tensor').shape))

    init_default_scope('mmdet')
    detector = DET.build(ConfigDict(
        type='RetinaNet', data_preprocessor=dict(type='DetDataPreprocessor'),
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3)),
        neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=64, start_level=0,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(type='RetinaHead', num_classes=3, in_channels=64, feat_channels=64,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                             ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
        test_cfg=dict(nms_pre=100, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))).eval()
    sample = DetDataSample(metainfo=dict(img_shape=IMAGE_SIZE[1:], ori_shape=IMAGE_SIZE[1:], scale_factor=(1., 1.)))
    with torch.no_grad():
        _timed('mmdet RetinaNet-R18 (mmcv nms), detections',
               lambda: len(detector.predict(image, [sample])[0].pred_instances))

    init_default_scope('mmseg')
    segmentor = revert_sync_batchnorm(SEG.build(ConfigDict(
        type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='ResNetV1c', depth=18, out_indices=(0, 1, 2, 3)),
        decode_head=dict(type='UPerHead', in_channels=[64, 128, 256, 512], in_index=[0, 1, 2, 3],
                         channels=32, num_classes=5, loss_decode=dict(type='CrossEntropyLoss')),
        test_cfg=dict(mode='whole')))).eval()
    seg_sample = SegDataSample(metainfo=dict(img_shape=IMAGE_SIZE[1:], ori_shape=IMAGE_SIZE[1:],
                                             pad_shape=IMAGE_SIZE[1:]))
    with torch.no_grad():
        _timed('mmseg UperNet-R18, label map shape',
               lambda: tuple(segmentor.predict(image, [seg_sample])[0].pred_sem_seg.data.shape))


def boat_backbones():
    print('BOAT backbones built from each toolbox registry (tiny widths, odd 97x131 image):')
    image = torch.randn(1, 3, 97, 131)
    archs = {
        'BOATSwinTransformer': dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
        'BOATCSWinTransformer': dict(embed_dims=32, depths=(1, 2, 2, 1), num_heads=(2, 2, 4, 8),
                                     split_sizes=(1, 2, 7, 7)),
    }
    for scope in ('mmpretrain', 'mmdet', 'mmseg'):
        registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
        for type_name, arch in archs.items():
            model = registry.build(dict(type=type_name, arch=arch)).eval()
            with torch.no_grad():
                _timed(f'{scope:10s} {type_name}, feature maps',
                       lambda: [tuple(o.shape[1:]) for o in model(image)])


def main():
    torch.manual_seed(0)
    stock_models()
    boat_backbones()
    print('demo finished: all three toolboxes and both BOAT backbones ran on CPU')


if __name__ == '__main__':
    main()
