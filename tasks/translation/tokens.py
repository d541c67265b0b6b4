"""The translation tasks' BPE vocabulary: source and target share it, its special tokens first."""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
