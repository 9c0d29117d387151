#!/bin/sh
# A recipe using the panel's extension keys (typed parameters, timeout, access).
# metadata_begin
# recipe: webapp
# tags: debian,ubuntu2204
# revision: 1
# description_en: Deploys the web app
# param: APP_NAME type=string default=shop description="Name of the app"
# param: WORKERS type=int default=2
# param: DEBUG type=bool default=no
# param: MODE type=enum(dev|prod) default=prod
# param: DB_PASSWORD type=string required=yes secret=yes description="Database password"
# timeout: 90m
# access: admins
# metadata_end
echo "deploying $APP_NAME with $WORKERS workers in $MODE mode"
