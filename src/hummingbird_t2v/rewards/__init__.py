"""Image-text and video-text reward models behind one small interface (see `base.RewardModel`).

* `HPSv2Reward`         HPSv2.1 image-text reward (open_clip ViT-H-14 weights, transformers CLIP)
* `CLIPImageTextReward` any transformers CLIP folder as an image-text reward
* `ViCLIPReward`        ViCLIP-L/14 video-text reward (8 frames)
* `ToyAttributeReward`  the toy evaluator's belief in the prompted attributes (toy world)
* `ToyMotionReward`     the toy foreground's travel along the prompted direction, read off the pixels
* `build_reward_model`  all of the above by name; docs/rewards.md lists the weights users bring
"""

from hummingbird_t2v.rewards.base import RewardInputError, RewardKind, RewardModel, TextFeatureCache
from hummingbird_t2v.rewards.clip_reward import CLIPImageTextReward
from hummingbird_t2v.rewards.factory import REWARD_NAMES, build_reward_model
from hummingbird_t2v.rewards.hpsv2 import HPS_FILE_NAME, HPSv2Config, HPSv2Reward
from hummingbird_t2v.rewards.motion import ToyMotionReward
from hummingbird_t2v.rewards.preprocess import ImagePreprocess
from hummingbird_t2v.rewards.toy import AttributeClassifier, ToyAttributeReward, ToyPromptParser
from hummingbird_t2v.rewards.viclip import VICLIP_FILE_NAME, ViCLIPConfig, ViCLIPReward

__all__ = [
    "HPS_FILE_NAME",
    "REWARD_NAMES",
    "VICLIP_FILE_NAME",
    "AttributeClassifier",
    "CLIPImageTextReward",
    "HPSv2Config",
    "HPSv2Reward",
    "ImagePreprocess",
    "RewardInputError",
    "RewardKind",
    "RewardModel",
    "TextFeatureCache",
    "ToyAttributeReward",
    "ToyMotionReward",
    "ToyPromptParser",
    "ViCLIPConfig",
    "ViCLIPReward",
    "build_reward_model",
]
