"use strict";
// The learner views: filled in by issue #18.
