"""The topic names the nodes, benches and test tools agree on: defined here once (docs/architecture.md
lists what each carries). Plain strings, no ROS import: ROS-free tools can name a topic too.

A launch file may remap any of them (real_arm.launch.yaml: the robot's own /joint_states and
command topics); the names here are what the nodes ask for."""

# the robot's side (ros2_control's conventions)
JOINT_STATES_TOPIC = '/joint_states'                        # sensor_msgs/JointState, from the robot
COMMAND_TOPIC = '/forward_effort_controller/commands'       # std_msgs/Float64MultiArray, to the robot
DIAGNOSTICS_TOPIC = '/diagnostics'                          # diagnostic_msgs/DiagnosticArray, every node

# the stack
STATE_TOPIC = '/mbrl/state'                                 # the estimator's filtered JointState
GOAL_TOPIC = '/mbrl/goal'                                   # geometry_msgs/PointStamped, the EE target
MPC_COMMAND_TOPIC = '/mbrl/mpc/command'                     # the planner's proposal to the filter
MPC_PLAN_TOPIC = '/mbrl/mpc/plan'                           # the planned EE path (visualisation)
POLICY_COMMAND_TOPIC = '/mbrl/policy/command'               # the distilled policy's proposal
SAFETY_MODE_TOPIC = '/mbrl/safety/mode'                     # std_msgs/String: mpc, policy or hold
# The limits the safety filter enforces, latched, re-sent whenever they change (live parameters too):
# sensor_msgs/JointState, one entry per joint in `name`:
#   effort   = the effort limit it clamps to [Nm] (robot limit x effort_limit_scale), symmetric +-
#   velocity = the largest change of its output from one period to the next [Nm per period]
#              (robot limit x max_effort_step): a rate of the effort, not a joint velocity
#   position = the keep-out band inside each joint range it refuses commands in [rad]
SAFETY_LIMITS_TOPIC = '/mbrl/safety/limits'
ACTIVE_MODEL_TOPIC = '/mbrl/world_model/active_model'      # std_msgs/String, latched: path + sha256
PREDICTION_TOPIC = '/mbrl/world_model/prediction'
UNCERTAINTY_TOPIC = '/mbrl/world_model/uncertainty'
EE_POSITION_TOPIC = '/mbrl/sim/ee_position'                 # the simulator's true EE point
