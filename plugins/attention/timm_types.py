"""The timm.layers.create_attn types ``timm_attn`` accepts: plain data, importable without torch."""

# Types that keep (B, C, H, W) when given only the channel count (ge, bat, bottleneck need more arguments).
TIMM_ATTN_TYPES = ["se", "ese", "eca", "ecam", "ceca", "gc", "gca", "cbam", "lcbam", "coord", "scoord", "ela",
                   "strip", "nl", "sk", "splat", "lambda", "halo"]
