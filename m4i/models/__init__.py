"""Captioners: frozen-backbone features, Show-and-Tell, ViT-GPT2; training, decoding, quality.

Modules: features (backbones, feature cache), show_tell, vit_gpt2, decoding (greedy/beam),
inputs (feature rows or images per record), train (train_captioner, load_captioner),
generate (generate_captions), quality (caption_quality).
"""
