"""Natural-language instructions for every Meta-World v3 task, with paraphrases.

The first phrasing of each task is its canonical instruction (used by evaluation unless asked otherwise);
data generation samples among all of them so a model sees varied language for the same behaviour.
"""

from __future__ import annotations

import random

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("put the ring on the peg", "slide the ring onto the peg", "assemble the ring onto the peg"),
    "basketball-v3": ("put the ball in the hoop", "dunk the ball into the basket", "score the ball in the hoop"),
    "bin-picking-v3": ("move the cube to the other bin", "pick the cube and place it in the other bin",
                       "transfer the block between the bins"),
    "box-close-v3": ("close the box with its lid", "put the lid on the box", "cover the box"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down",
                                "press down on the button"),
    "button-press-topdown-wall-v3": ("press the button from the top behind the wall", "push the button down past the wall",
                                     "press down on the button behind the wall"),
    "button-press-v3": ("press the button", "push the button in", "press the button on the front"),
    "button-press-wall-v3": ("press the button behind the wall", "push the button in past the wall",
                             "reach around the wall and press the button"),
    "coffee-button-v3": ("press the button on the coffee machine", "push the coffee machine button",
                         "start the coffee machine"),
    "coffee-pull-v3": ("pull the mug away from the coffee machine", "take the mug out of the coffee machine",
                       "slide the mug out from the machine"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the mug into the coffee machine",
                       "put the mug under the spout"),
    "dial-turn-v3": ("turn the dial", "rotate the dial", "spin the dial around"),
    "disassemble-v3": ("take the ring off the peg", "lift the ring off the peg", "remove the ring from the peg"),
    "door-close-v3": ("close the door", "swing the door shut", "push the door closed"),
    "door-lock-v3": ("lock the door", "turn the door lock down", "lock the door by turning the knob"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open"),
    "door-unlock-v3": ("unlock the door", "turn the door lock open", "unlock the door by turning the knob"),
    "hand-insert-v3": ("put your hand into the hole", "insert the gripper into the hole",
                       "reach into the hole in the table"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut", "slide the drawer closed"),
    "drawer-open-v3": ("open the drawer", "pull the drawer open", "slide the drawer out"),
    "faucet-open-v3": ("turn the faucet on", "open the faucet", "rotate the faucet handle to open it"),
    "faucet-close-v3": ("turn the faucet off", "close the faucet", "rotate the faucet handle to close it"),
    "hammer-v3": ("hammer the nail in", "use the hammer to drive the nail", "hit the nail with the hammer"),
    "handle-press-side-v3": ("press the handle down from the side", "push the side handle down",
                             "press down the handle on the side"),
    "handle-press-v3": ("press the handle down", "push the handle down", "press down on the handle"),
    "handle-pull-side-v3": ("pull the handle up from the side", "lift the side handle up",
                            "pull up the handle on the side"),
    "handle-pull-v3": ("pull the handle up", "lift the handle", "pull up on the handle"),
    "lever-pull-v3": ("pull the lever up", "lift the lever", "raise the lever"),
    "pick-place-wall-v3": ("pick up the puck and place it at the goal behind the wall",
                           "lift the puck over the wall to the target", "move the puck past the wall to the goal"),
    "pick-out-of-hole-v3": ("pick the peg out of the hole", "lift the peg out of the hole",
                            "pull the peg up out of the hole"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "grab the puck and put it on the target",
                      "lift the puck and move it to the goal"),
    "plate-slide-v3": ("slide the plate into the goal", "push the plate into the net",
                       "slide the plate forward into the goal"),
    "plate-slide-side-v3": ("slide the plate sideways into the goal", "push the plate into the net from the side",
                            "slide the plate to the side goal"),
    "plate-slide-back-v3": ("slide the plate back out of the goal", "pull the plate out of the net",
                            "slide the plate back toward you"),
    "plate-slide-back-side-v3": ("slide the plate back out of the side goal", "pull the plate out of the net sideways",
                                 "slide the plate back from the side goal"),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", "put the peg in the hole",
                           "slide the peg sideways into the hole"),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg out sideways", "remove the peg from the hole"),
    "soccer-v3": ("kick the ball into the goal", "push the ball into the net", "score a goal with the ball"),
    "stick-push-v3": ("use the stick to push the thermos", "push the thermos with the stick",
                      "grab the stick and push the bottle to the goal"),
    "stick-pull-v3": ("use the stick to pull the thermos", "pull the thermos with the stick",
                      "grab the stick and pull the bottle to the goal"),
    "push-v3": ("push the puck to the goal", "slide the puck to the target", "push the puck onto the goal"),
    "push-wall-v3": ("push the puck to the goal behind the wall", "slide the puck around the wall to the target",
                     "push the puck past the wall to the goal"),
    "push-back-v3": ("push the puck back to the goal", "slide the puck backward to the target",
                     "pull the puck back onto the goal"),
    "reach-v3": ("reach the goal position", "move the gripper to the target", "reach for the goal"),
    "reach-wall-v3": ("reach the goal behind the wall", "move the gripper over the wall to the target",
                      "reach past the wall to the goal"),
    "shelf-place-v3": ("put the block on the shelf", "place the cube on the shelf", "lift the block onto the shelf"),
    "sweep-into-v3": ("sweep the cube into the hole", "push the block into the hole",
                      "slide the cube into the hole in the table"),
    "sweep-v3": ("sweep the cube off the table", "push the block off the edge", "sweep the cube to the side"),
    "window-open-v3": ("open the window", "slide the window open", "push the window open"),
    "window-close-v3": ("close the window", "slide the window shut", "push the window closed"),
}


def instruction_for(task: str, rng: random.Random | None = None) -> str:
    """The canonical instruction of `task`, or a random paraphrase when `rng` is given."""
    try:
        options = INSTRUCTIONS[task]
    except KeyError:
        raise KeyError(f"no instruction for task {task!r}; known tasks: {', '.join(sorted(INSTRUCTIONS))}") from None
    return options[0] if rng is None else rng.choice(options)
