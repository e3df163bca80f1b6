"""The frame path: landmarks -> motion -> warp -> generator -> compose, held together by the Animator."""
