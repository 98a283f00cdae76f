"""The preset specs (paper Table 1 and more); the wheel ships this folder as dlagraph.presets."""
