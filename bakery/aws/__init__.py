"""The AWS side of bakery: from a rendered role to a released, shared and pruned AMI.

- `clients`: every boto3 client, with one retry policy and actionable credential errors.
- `images`: source-image look-up, bakery's images, their tags and snapshots, the listing.
- `build`: `packer build` on amazon-ebs, tagging, post-build guarantees, build records.
- `verify`: one test instance per image, the testinfra runner, verified/rejected tags.
- `distribute`: copies to other regions and sharing with accounts and organisations.
- `release`: promotion to an environment through SSM Parameter Store, and rollback.
- `prune`, `janitor`: removing old images and expired test resources (dry run first).
- `appsignals`, `iam`: the once-per-account switch and the IAM policy documents.
- `pipeline`, `tasks`: what the lead's build/verify tasks call, and the AWS-only tasks.
"""
