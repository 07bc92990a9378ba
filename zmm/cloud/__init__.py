"""Cloud image generation: the lane of background requests a worker hands
jobs to (`lane`) and the providers behind one interface (`providers`).
"""
